"""Classical baselines against theory (docs/metrics.md §7)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from simworld.engine.baselines import (
    DeGroot,
    FriedkinJohnsen,
    HegselmannKrause,
    influence_matrix,
    make_dynamics,
    simulate,
)


def test_influence_matrix_is_row_stochastic_with_self_weight():
    g = nx.path_graph(3)  # 0-1-2
    w = influence_matrix(g, self_weight=1.0)
    # node 0: itself + node 1 -> [1/2, 1/2, 0]; node 1: three ones -> 1/3 each
    np.testing.assert_allclose(w[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(w[1], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_degroot_converges_to_the_eigenvector_weighted_average():
    g = nx.watts_strogatz_graph(20, 4, 0.3, seed=3)
    w = influence_matrix(g)
    x0 = np.random.default_rng(0).uniform(1, 5, 20)
    traj = simulate(DeGroot(w), x0, 500, np.random.default_rng(0))
    vals, vecs = np.linalg.eig(w.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi = pi / pi.sum()
    np.testing.assert_allclose(traj[-1], pi @ x0, atol=1e-8)
    # with self weight 1 and W_ij = 1/(deg_i + 1), π_i ∝ deg_i + 1
    degrees = np.array([d for _, d in sorted(g.degree())]) + 1.0
    np.testing.assert_allclose(pi, degrees / degrees.sum(), atol=1e-10)


def test_friedkin_johnsen_reaches_its_closed_form_fixed_point():
    g = nx.barabasi_albert_graph(15, 2, seed=1)
    x0 = np.random.default_rng(1).uniform(-2, 2, 15)
    lam = np.random.default_rng(2).uniform(0.2, 0.9, 15)
    fj = make_dynamics("friedkin_johnsen", g, x0, susceptibility=lam)
    assert isinstance(fj, FriedkinJohnsen)
    traj = simulate(fj, x0, 400, np.random.default_rng(0))
    w = influence_matrix(g)
    expected = np.linalg.inv(np.eye(15) - np.diag(lam) @ w) @ (np.eye(15) - np.diag(lam)) @ x0
    np.testing.assert_allclose(traj[-1], expected, atol=1e-6)
    np.testing.assert_allclose(fj.fixed_point(), expected, atol=1e-12)


def test_hegselmann_krause_small_bound_fragments_large_bound_agrees():
    x0 = np.linspace(0.0, 1.0, 41)
    rng = np.random.default_rng(0)
    small = simulate(HegselmannKrause(0.05), x0, 100, rng)[-1]
    large = simulate(HegselmannKrause(0.5), x0, 100, rng)[-1]
    clusters_small = len(np.unique(np.round(small, 6)))
    assert clusters_small >= 3
    assert np.ptp(large) < 1e-9
    np.testing.assert_allclose(large, 0.5, atol=1e-9)  # symmetric start: consensus at the middle


def test_hegselmann_krause_on_a_graph_only_hears_neighbours():
    g = nx.Graph([(0, 1)])
    g.add_node(2)
    hk = make_dynamics("hegselmann_krause", g, np.array([0.0, 0.2, 0.1]), epsilon=1.0)
    out = hk.update(np.array([0.0, 0.2, 0.1]), np.random.default_rng(0))
    np.testing.assert_allclose(out, [0.1, 0.1, 0.1])  # 0 and 1 average; 2 is alone


def test_deffuant_weisbuch_moves_close_pairs_and_ignores_far_ones():
    g = nx.Graph([(0, 1), (2, 3)])
    dw = make_dynamics("deffuant_weisbuch", g, np.zeros(4), epsilon=0.5, mu=0.25)
    x = np.array([0.0, 0.4, 0.0, 1.0])
    out = simulate(dw, x, 50, np.random.default_rng(5))[-1]
    # pair (0,1) within ε: the mean 0.2 is conserved and the gap shrinks by (1-2μ) each meeting
    assert abs(out[0] + out[1] - 0.4) < 1e-12 and abs(out[0] - out[1]) < 0.4
    np.testing.assert_allclose(out[2:], [0.0, 1.0])  # pair (2,3) too far apart: unchanged


@pytest.mark.parametrize("self_weight", [0.0, 1.0])
@pytest.mark.parametrize(
    "name", ["degroot", "friedkin_johnsen", "hegselmann_krause", "deffuant_weisbuch"]
)
def test_an_isolated_agent_keeps_its_opinion_in_every_baseline(name, self_weight):
    # node 3 has no neighbours; with self_weight 0 its W row used to be all zero (-> 0.0)
    g = nx.Graph([(0, 1), (1, 2)])
    g.add_node(3)
    x0 = np.array([1.0, 2.0, 5.0, 4.0])
    dyn = make_dynamics(name, g, x0, self_weight=self_weight, epsilon=10.0)
    traj = simulate(dyn, x0, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(traj[:, 3], 4.0)
    assert traj[:, :3].min() >= 1.0 and traj[:, :3].max() <= 5.0  # the others stay on the scale


def test_zero_self_weight_rows_are_stochastic_and_isolated_rows_are_identity():
    g = nx.Graph([(0, 1)])
    g.add_node(2)
    w = influence_matrix(g, self_weight=0.0)
    np.testing.assert_array_equal(w, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
