"""Classical opinion dynamics (docs/metrics.md §7): DeGroot, Friedkin–Johnsen, Hegselmann–Krause,
Deffuant–Weisbuch, as update rules on a vector of opinions over a networkx graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import networkx as nx
import numpy as np

from simworld.config.baseline import (
    DEFAULT_CONFIDENCE,
    DEFAULT_CONVERGENCE,
    DEFAULT_SELF_WEIGHT,
    DEFAULT_SUSCEPTIBILITY,
    BaselineName,
)


def influence_matrix(graph: nx.Graph, *, self_weight: float = DEFAULT_SELF_WEIGHT) -> np.ndarray:
    """Row-stochastic W: each agent weighs itself ``self_weight`` and each neighbour 1.

    Source: docs/metrics.md §7 (DeGroot 1974: ``x(t+1) = W x(t)`` with W row-stochastic).

    Args:
        graph: Undirected graph on nodes ``0..n-1``.
        self_weight: Weight of an agent's own opinion before normalisation.

    An agent whose row would be all zero (no neighbours and ``self_weight: 0``, which
    Erdős–Rényi or edge-list networks can produce) weighs only itself, so it keeps its
    opinion: a zero row would send it to 0, off any Likert scale.

    Returns:
        The n × n matrix W (every row sums to 1; an isolated agent keeps its opinion).
    """
    n = graph.number_of_nodes()
    # weight=None: every edge counts 1 (networkx allows it; its stub says str)
    adjacency = nx.to_numpy_array(graph, nodelist=range(n), weight=None)  # type: ignore[call-overload]
    w = adjacency + self_weight * np.eye(n)
    rows = w.sum(axis=1)
    alone = np.flatnonzero(rows == 0)
    w[alone, alone] = 1.0
    rows[alone] = 1.0
    return w / rows[:, None]


class Dynamics(Protocol):
    """One synchronous or pairwise update of all opinions."""

    def update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Opinions at t+1 from opinions at t (a new array)."""
        ...


@dataclass
class DeGroot:
    """``x(t+1) = W x(t)`` (docs/metrics.md §7). Converges on a connected aperiodic graph to the
    average weighted by W's left eigenvector for eigenvalue 1."""

    w: np.ndarray

    def update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One averaging step."""
        return self.w @ x


@dataclass
class FriedkinJohnsen:
    """``x(t+1) = Λ W x(t) + (I − Λ) x(0)`` (docs/metrics.md §7), Λ = diag(susceptibility).

    Fixed point ``x* = (I − ΛW)^-1 (I − Λ) x(0)`` when some agent is stubborn (λ < 1).
    """

    w: np.ndarray
    susceptibility: np.ndarray
    x0: np.ndarray

    def update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One step toward the stubborn anchor."""
        lam = self.susceptibility
        return lam * (self.w @ x) + (1.0 - lam) * self.x0

    def fixed_point(self) -> np.ndarray:
        """The equilibrium ``(I − ΛW)^-1 (I − Λ) x(0)``."""
        n = len(self.x0)
        lam = np.diag(self.susceptibility)
        return np.linalg.solve(np.eye(n) - lam @ self.w, (np.eye(n) - lam) @ self.x0)


@dataclass
class HegselmannKrause:
    """``x_i(t+1)`` = mean of all ``x_j(t)`` with ``|x_i − x_j| ≤ ε`` (docs/metrics.md §7).

    ``graph=None`` is the classical all-to-all model; with a graph only neighbours (and i
    itself) are candidates.
    """

    epsilon: float
    neighbours: list[np.ndarray] | None = None

    def update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One bounded-confidence averaging step."""
        out = np.empty_like(x, dtype=float)
        for i in range(len(x)):
            pool = np.arange(len(x)) if self.neighbours is None else self.neighbours[i]
            vals = x[pool]
            out[i] = vals[np.abs(vals - x[i]) <= self.epsilon].mean()
        return out


@dataclass
class DeffuantWeisbuch:
    """A random pair (along an edge); if ``|x_i − x_j| < ε`` each moves μ toward the other
    (docs/metrics.md §7). One ``update`` performs ``pairs_per_step`` such encounters in turn."""

    edges: np.ndarray
    epsilon: float
    mu: float = DEFAULT_CONVERGENCE
    pairs_per_step: int = 1

    def update(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Some pairwise encounters, drawn from ``rng``."""
        x = x.astype(float).copy()
        if len(self.edges) == 0:
            return x
        for k in rng.integers(0, len(self.edges), size=self.pairs_per_step):
            i, j = self.edges[int(k)]
            if rng.random() < 0.5:
                i, j = j, i
            if abs(x[i] - x[j]) < self.epsilon:
                xi, xj = x[i], x[j]
                x[i] = xi + self.mu * (xj - xi)
                x[j] = xj + self.mu * (xi - xj)
        return x


def make_dynamics(
    name: BaselineName,
    graph: nx.Graph,
    x0: np.ndarray,
    *,
    self_weight: float = DEFAULT_SELF_WEIGHT,
    susceptibility: float | np.ndarray = DEFAULT_SUSCEPTIBILITY,
    epsilon: float = DEFAULT_CONFIDENCE,
    mu: float = DEFAULT_CONVERGENCE,
) -> Dynamics:
    """Build a baseline's update rule on ``graph`` from its parameters."""
    n = graph.number_of_nodes()
    if name == "degroot":
        return DeGroot(influence_matrix(graph, self_weight=self_weight))
    if name == "friedkin_johnsen":
        lam = np.broadcast_to(np.asarray(susceptibility, dtype=float), (n,)).copy()
        return FriedkinJohnsen(
            influence_matrix(graph, self_weight=self_weight), lam, x0.astype(float)
        )
    if name == "hegselmann_krause":
        neigh = [np.array(sorted({i, *graph.neighbors(i)}), dtype=int) for i in range(n)]
        return HegselmannKrause(epsilon, neigh)
    edges = np.array(sorted((min(u, v), max(u, v)) for u, v in graph.edges()), dtype=int)
    return DeffuantWeisbuch(edges.reshape(-1, 2), epsilon, mu, pairs_per_step=max(1, n // 2))


def simulate(
    dynamics: Dynamics, x0: np.ndarray, steps: int, rng: np.random.Generator
) -> np.ndarray:
    """Opinions at steps ``0..steps`` as a ``(steps + 1) × n`` array."""
    xs = [np.asarray(x0, dtype=float)]
    for _ in range(steps):
        xs.append(dynamics.update(xs[-1], rng))
    return np.vstack(xs)
