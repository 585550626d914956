"""Social networks: build the agents' graph from a scenario's network settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import numpy as np

from simworld.config.persona import SLUG, Persona
from simworld.config.scenario import (
    BarabasiAlbertNetwork,
    CompleteNetwork,
    EdgeListNetwork,
    ErdosRenyiNetwork,
    NetworkConfig,
    StochasticBlockNetwork,
    WattsStrogatzNetwork,
)
from simworld.errors import ConfigError, short_repr


def build_graph(
    config: NetworkConfig,
    personas: list[Persona],
    rng: np.random.Generator,
    *,
    source: str | Path,
    seed_drawn_ids: str | None = None,
) -> nx.Graph:
    """Build an undirected graph whose nodes ``0..n-1`` are the agents in population order.

    Args:
        config: The scenario's ``network`` section.
        personas: The population, in order.
        rng: Seeded generator; random generators draw their seed from it.
        source: The scenario file, named in errors.
        seed_drawn_ids: Why the population's persona ids depend on the seed
            (:func:`simworld.society.population.seed_drawn_ids`), or ``None``. An edge list
            then must name agents by index, so that it is valid for every seed or none.

    Returns:
        The graph.

    Raises:
        ConfigError: The parameters do not fit the population or the edge list is bad.
    """
    n = len(personas)
    seed = int(rng.integers(0, 2**31 - 1))

    def bad(field: str, message: str) -> ConfigError:
        return ConfigError(source, f"network.{field}", message)

    if isinstance(config, CompleteNetwork):
        graph = nx.complete_graph(n)
    elif isinstance(config, ErdosRenyiNetwork):
        graph = nx.gnp_random_graph(n, config.p, seed=seed)
    elif isinstance(config, WattsStrogatzNetwork):
        if config.k >= n:
            raise bad("k", f"k={config.k} must be smaller than the population size {n}")
        graph = nx.watts_strogatz_graph(n, config.k, config.p, seed=seed)
    elif isinstance(config, BarabasiAlbertNetwork):
        if config.m >= n:
            raise bad("m", f"m={config.m} must be smaller than the population size {n}")
        graph = nx.barabasi_albert_graph(n, config.m, seed=seed)
    elif isinstance(config, StochasticBlockNetwork):
        graph = _stochastic_block(config, personas, seed, bad)
    elif isinstance(config, EdgeListNetwork):
        graph = _edge_list(Path(config.path), personas, seed_drawn_ids)
    else:  # pragma: no cover - the discriminated union admits nothing else
        raise bad("generator", f"unknown generator {config!r}")
    out: nx.Graph[int] = nx.Graph()
    out.add_nodes_from(range(n))
    out.add_edges_from((int(a), int(b)) for a, b in graph.edges() if a != b)
    return out


def isolation_warning(graph: nx.Graph, config: NetworkConfig) -> str | None:
    """A one-line warning when some agents have no neighbour (they hear and tell no one),
    or ``None``."""
    isolated = sum(1 for node in graph if graph.degree(node) == 0)
    if not isolated:
        return None
    n = graph.number_of_nodes()
    detail = (
        f"the edge list {Path(config.path).name} gives {n - isolated} of them a neighbour"
        if isinstance(config, EdgeListNetwork)
        else f"generator {config.generator}"
    )
    return f"network: {isolated} of {n} agents have no neighbours ({detail})"


def _stochastic_block(
    config: StochasticBlockNetwork,
    personas: list[Persona],
    seed: int,
    bad: Callable[[str, str], ConfigError],
) -> nx.Graph[int]:
    n = len(personas)
    if config.sizes is not None:
        if sum(config.sizes) != n:
            raise bad("sizes", f"block sizes sum to {sum(config.sizes)}, not the population {n}")
        order = list(range(n))
        sizes = list(config.sizes)
    else:
        group_by = config.group_by
        assert group_by is not None  # the schema requires exactly one of sizes and group_by
        keys = [str(getattr(p, group_by) or "") for p in personas]
        groups = sorted(set(keys))
        order = sorted(range(n), key=lambda i: (groups.index(keys[i]), i))
        sizes = [keys.count(g) for g in groups]
    k = len(sizes)
    probs = [[config.p_in if a == b else config.p_out for b in range(k)] for a in range(k)]
    block = nx.stochastic_block_model(sizes, probs, seed=seed)
    return nx.relabel_nodes(block, dict(enumerate(order)))


def _edge_list(path: Path, personas: list[Persona], seed_drawn_ids: str | None) -> nx.Graph:
    if not path.is_file():
        raise ConfigError(path, "", "edge list file not found")
    index = {p.id: i for i, p in enumerate(personas)}
    indices = f"0..{len(personas) - 1}"
    graph: nx.Graph[int] = nx.Graph()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror or exc}") from None
    text = text.removeprefix("\ufeff")  # the byte-order mark spreadsheet exports begin with
    if "\x00" in text:
        raise ConfigError(
            path,
            f"line {text[: text.index(chr(0))].count(chr(10)) + 1}",
            "binary data (a NUL byte), not an edge list",
        )
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise ConfigError(path, f"line {lineno}", "expected two node names per line")
        ends = []
        for part in parts:
            is_index = part.isascii() and part.isdigit() and int(part) < len(personas)
            if seed_drawn_ids is None and part in index:  # an id wins over an index
                ends.append(index[part])
            elif is_index:
                ends.append(int(part))
            elif seed_drawn_ids is not None and re.fullmatch(SLUG, part) and not part.isdigit():
                raise ConfigError(
                    path,
                    f"line {lineno}",
                    f"names {short_repr(part)}, but {seed_drawn_ids}, so which persona ids "
                    f"the population holds depends on the seed: name agents by index {indices}",
                )
            else:
                raise ConfigError(
                    path,
                    f"line {lineno}",
                    f"unknown node {short_repr(part)}: not a persona id nor an index {indices}",
                )
        graph.add_edge(*ends)
    return graph
