"""Social network generators and edge lists."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from simworld.config.persona import BIG_FIVE_TRAITS, Persona, load_library
from simworld.config.scenario import (
    BarabasiAlbertNetwork,
    CompleteNetwork,
    EdgeListNetwork,
    ErdosRenyiNetwork,
    NetworkConfig,
    StochasticBlockNetwork,
    WattsStrogatzNetwork,
)
from simworld.errors import ConfigError
from simworld.society.network import build_graph

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "agents" / "global_panel.yaml"
SOURCE = "scenario.yaml"


def _people(n: int, nationalities: list[str] | None = None) -> list[Persona]:
    nats = nationalities or ["Chile"] * n
    return [
        Persona(
            id=f"p{i}",
            name=f"Person {i}",
            age=30 + i % 40,
            gender="woman" if i % 2 else "man",
            nationality=nats[i],
            occupation="clerk",
            education="secondary school",
            big_five=dict.fromkeys(BIG_FIVE_TRAITS, 3.0),
        )
        for i in range(n)
    ]


def _build(config: NetworkConfig, personas: list[Persona], seed: int = 0) -> nx.Graph:
    return build_graph(config, personas, np.random.default_rng(seed), source=SOURCE)


def _edges(graph: nx.Graph) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in graph.edges()}


def _check_shape(graph: nx.Graph, n: int) -> None:
    assert isinstance(graph, nx.Graph) and not graph.is_directed()
    assert sorted(graph.nodes()) == list(range(n))
    assert nx.number_of_selfloops(graph) == 0


# -- generators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_complete(n: int) -> None:
    """Everyone knows everyone: n(n-1)/2 edges."""
    g = _build(CompleteNetwork(generator="complete"), _people(n))
    _check_shape(g, n)
    assert g.number_of_edges() == n * (n - 1) // 2


@pytest.mark.parametrize(("n", "k"), [(10, 2), (12, 4), (30, 6)])
def test_watts_strogatz_ring(n: int, k: int) -> None:
    """With p=0 the small world is the ring lattice: n*k/2 edges, every degree k."""
    g = _build(WattsStrogatzNetwork(generator="watts_strogatz", k=k, p=0.0), _people(n))
    _check_shape(g, n)
    assert g.number_of_edges() == n * k // 2
    assert {d for _, d in g.degree()} == {k}
    assert (0, 1) in _edges(g) and (0, n - 1) in _edges(g)


def test_watts_strogatz_rewiring_keeps_edge_count() -> None:
    """Rewiring moves edges but never adds or removes any."""
    n, k = 40, 4
    g = _build(WattsStrogatzNetwork(generator="watts_strogatz", k=k, p=0.5), _people(n), seed=3)
    _check_shape(g, n)
    assert g.number_of_edges() == n * k // 2
    ring = _build(WattsStrogatzNetwork(generator="watts_strogatz", k=k, p=0.0), _people(n))
    assert _edges(g) != _edges(ring)


@pytest.mark.parametrize(("n", "m"), [(5, 1), (20, 2), (30, 3)])
def test_barabasi_albert(n: int, m: int) -> None:
    """Preferential attachment adds m edges per node after the first m: (n-m)*m edges."""
    g = _build(BarabasiAlbertNetwork(generator="barabasi_albert", m=m), _people(n), seed=n)
    _check_shape(g, n)
    assert g.number_of_edges() == (n - m) * m
    assert nx.is_connected(g)


def test_erdos_renyi_extremes_and_density() -> None:
    """p=0 is empty, p=1 complete, and p=0.3 gives about 30% of the pairs."""
    people = _people(60)
    assert _build(ErdosRenyiNetwork(generator="erdos_renyi", p=0.0), people).number_of_edges() == 0
    full = _build(ErdosRenyiNetwork(generator="erdos_renyi", p=1.0), people)
    assert full.number_of_edges() == 60 * 59 // 2
    g = _build(ErdosRenyiNetwork(generator="erdos_renyi", p=0.3), people, seed=5)
    _check_shape(g, 60)
    assert 0.25 <= nx.density(g) <= 0.35


def test_stochastic_block_by_nationality_makes_cliques() -> None:
    """With p_in=1 and p_out=0 every nationality is a clique and nothing else is linked."""
    nats = ["Peru", "Ghana", "Peru", "Japan", "Ghana", "Peru", "Japan", "Peru"]
    people = _people(len(nats), nats)
    config = StochasticBlockNetwork(
        generator="stochastic_block", p_in=1.0, p_out=0.0, group_by="nationality"
    )
    g = _build(config, people, seed=1)
    _check_shape(g, len(nats))
    expected = {(a, b) for a, b in combinations(range(len(nats)), 2) if nats[a] == nats[b]}
    assert _edges(g) == expected
    components = sorted(sorted(c) for c in nx.connected_components(g))
    assert components == [[0, 2, 5, 7], [1, 4], [3, 6]]


def test_stochastic_block_on_the_global_panel() -> None:
    """On the shipped panel, nationality blocks are cliques of the panel's compatriots."""
    people = load_library(PANEL).personas
    config = StochasticBlockNetwork(
        generator="stochastic_block", p_in=1.0, p_out=0.0, group_by="nationality"
    )
    g = _build(config, people)
    _check_shape(g, len(people))
    for component in nx.connected_components(g):
        nats = {people[i].nationality for i in component}
        assert len(nats) == 1
        size = len(component)
        assert g.subgraph(component).number_of_edges() == size * (size - 1) // 2
    assert nx.number_connected_components(g) == len({p.nationality for p in people})


def test_stochastic_block_by_sizes() -> None:
    """Explicit sizes cut the population, in order, into consecutive blocks."""
    config = StochasticBlockNetwork(
        generator="stochastic_block", p_in=1.0, p_out=0.0, sizes=[3, 2, 4]
    )
    g = _build(config, _people(9))
    expected = set()
    for block in ([0, 1, 2], [3, 4], [5, 6, 7, 8]):
        expected |= set(combinations(block, 2))
    assert _edges(g) == expected


def test_stochastic_block_across_only() -> None:
    """p_in=0, p_out=1 links exactly the pairs from different blocks."""
    config = StochasticBlockNetwork(generator="stochastic_block", p_in=0.0, p_out=1.0, sizes=[2, 3])
    g = _build(config, _people(5))
    assert g.number_of_edges() == 2 * 3
    assert nx.is_bipartite(g)


# -- seeding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        ErdosRenyiNetwork(generator="erdos_renyi", p=0.2),
        WattsStrogatzNetwork(generator="watts_strogatz", k=4, p=0.3),
        BarabasiAlbertNetwork(generator="barabasi_albert", m=2),
        StochasticBlockNetwork(generator="stochastic_block", p_in=0.6, p_out=0.1, sizes=[15, 15]),
    ],
    ids=lambda c: c.generator,
)
def test_random_generators_are_seeded(config: NetworkConfig) -> None:
    """Same seed, same graph; another seed, another graph."""
    people = _people(30)
    assert _edges(_build(config, people, seed=4)) == _edges(_build(config, people, seed=4))
    assert _edges(_build(config, people, seed=4)) != _edges(_build(config, people, seed=5))


# -- parameter errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (WattsStrogatzNetwork(generator="watts_strogatz", k=6, p=0.1), "network.k"),
        (BarabasiAlbertNetwork(generator="barabasi_albert", m=6), "network.m"),
        (
            StochasticBlockNetwork(generator="stochastic_block", p_in=1, p_out=0, sizes=[3, 4]),
            "network.sizes",
        ),
    ],
    ids=["ws-k", "ba-m", "sbm-sizes"],
)
def test_parameters_that_do_not_fit_the_population(config: NetworkConfig, field: str) -> None:
    """Too-large k or m, or block sizes not summing to n, name the scenario field."""
    with pytest.raises(ConfigError) as info:
        _build(config, _people(6))
    assert (info.value.path, info.value.field) == (SOURCE, field)


# -- edge lists ---------------------------------------------------------------------------------


def _edge_list(tmp_path: Path, text: str) -> EdgeListNetwork:
    path = tmp_path / "edges.txt"
    path.write_text(text, encoding="utf-8")
    return EdgeListNetwork(generator="edge_list", path=str(path))


def test_edge_list_by_persona_ids(tmp_path: Path) -> None:
    """Persona ids map to their agents' positions in the population."""
    people = _people(5)
    g = _build(_edge_list(tmp_path, "p0 p1\np3 p4\np1 p4\n"), people)
    _check_shape(g, 5)
    assert _edges(g) == {(0, 1), (3, 4), (1, 4)}


def test_edge_list_follows_population_order(tmp_path: Path) -> None:
    """Ids follow their persona wherever the sampler placed it."""
    people = list(reversed(_people(4)))  # p3 is node 0, p0 is node 3
    g = _build(_edge_list(tmp_path, "p0 p1\n"), people)
    assert _edges(g) == {(2, 3)}


def test_edge_list_by_indices_with_comments_commas_and_repeats(tmp_path: Path) -> None:
    """0-based indices, ``#`` comments, blank lines, commas; repeats and self-loops collapse."""
    text = "# friends\n0 1\n\n1,2   # colleagues\n2 1\n3 3\n  4\t0\n"
    g = _build(_edge_list(tmp_path, text), _people(6))
    _check_shape(g, 6)
    assert _edges(g) == {(0, 1), (1, 2), (0, 4)}
    assert g.degree(5) == 0


def test_edge_list_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    """A spreadsheet's UTF-8 export starts with a byte-order mark: it is not part of a name."""
    g = _build(_edge_list(tmp_path, "\ufeffp0,p1\n1,2\n"), _people(3))
    assert _edges(g) == {(0, 1), (1, 2)}


def test_edge_list_mixes_ids_and_indices(tmp_path: Path) -> None:
    """A line may name one end by id and the other by index."""
    g = _build(_edge_list(tmp_path, "p2 0\n"), _people(3))
    assert _edges(g) == {(0, 2)}


@pytest.mark.parametrize(
    ("text", "line", "mention"),
    [
        ("p0 p1\np1 stranger\n", "line 2", "stranger"),
        ("0 1\n0 5\n", "line 2", "'5'"),
        ("0 -1\n", "line 1", "'-1'"),
        ("p0 p1 p2\n", "line 1", "two"),
        ("p0\n", "line 1", "two"),
        ("0 \u00b2\n", "line 1", "'\u00b2'"),
    ],
    ids=[
        "unknown-id",
        "index-too-large",
        "negative-index",
        "three-names",
        "one-name",
        "superscript-digit",
    ],
)
def test_edge_list_errors_name_file_and_line(
    tmp_path: Path, text: str, line: str, mention: str
) -> None:
    """Bad lines are reported with the edge-list file and the line number."""
    config = _edge_list(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        _build(config, _people(5))
    assert info.value.path == config.path
    assert info.value.field == line
    assert mention in info.value.message


def test_missing_edge_list_file(tmp_path: Path) -> None:
    """A missing edge-list file is a config error naming it."""
    config = EdgeListNetwork(generator="edge_list", path=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError) as info:
        _build(config, _people(3))
    assert "nope.txt" in str(info.value)
