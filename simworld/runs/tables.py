"""Who was simulated and how they were connected: ``agents.parquet`` and ``edges.parquet``.

Both are written once, when a run starts (the population and the network are fixed then;
rewiring by interventions is in ``trackers/interventions.parquet``). For run directories
older than these files, :func:`run_agents` and :func:`run_edges` derive the same tables
from the ``run_start`` line of ``transcript.jsonl`` (persona attributes it does not hold
are then null).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simworld.errors import ConfigError
from simworld.runs.writer import atomic_write_bytes, mask_table, parquet_bytes
from simworld.support.rundir import AGENTS, EDGES, TRANSCRIPT, read_manifest

if TYPE_CHECKING:
    from simworld.engine.model import SocialSimulation
    from simworld.support.redact import Redactor

AGENTS_FILE = AGENTS
EDGES_FILE = EDGES
COMMUNITY_SEED = 0
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
OPINION_TYPE = pa.list_(pa.struct([("topic", pa.string()), ("answer", pa.string())]))
AGENT_SCHEMA = pa.schema(
    [
        ("agent", pa.string()),
        ("name", pa.string()),
        ("node", pa.int64()),
        ("group", pa.string()),
        ("community", pa.int64()),
        ("degree", pa.int64()),
        ("baseline", pa.bool_()),
        ("age", pa.int64()),
        ("gender", pa.string()),
        ("nationality", pa.string()),
        ("culture", pa.string()),
        ("occupation", pa.string()),
        ("education", pa.string()),
        *[(t, pa.float64()) for t in TRAITS],
        ("values", pa.list_(pa.string())),
        ("opinions", OPINION_TYPE),
    ]
)
EDGE_SCHEMA = pa.schema(
    [
        ("source", pa.int64()),
        ("target", pa.int64()),
        ("source_agent", pa.string()),
        ("target_agent", pa.string()),
    ]
)


def communities(nodes: Sequence[int], edges: Sequence[Sequence[int]]) -> dict[int, int]:
    """Node → community index (Louvain, seeded; communities numbered by their lowest node).

    Deterministic: the same graph always gives the same numbering. Isolated nodes are
    communities of their own.
    """
    graph: nx.Graph[int] = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((int(u), int(v)) for u, v in edges)
    found = nx.community.louvain_communities(graph, seed=COMMUNITY_SEED)
    ordered = sorted((sorted(c) for c in found), key=lambda c: c[0])
    return {node: i for i, members in enumerate(ordered) for node in members}


def block_groups(network: dict[str, Any], attributes: Sequence[dict[str, Any]]) -> list[str | None]:
    """Each agent's block in a ``stochastic_block`` network, in node order (else None).

    Args:
        network: The scenario's ``network`` section (as in the manifest).
        attributes: Per node, the persona's attributes (``group_by`` is read from them).
    """
    n = len(attributes)
    if network.get("generator") != "stochastic_block":
        return [None] * n
    if network.get("sizes"):
        out: list[str | None] = []
        for block, size in enumerate(network["sizes"]):
            out += [f"block {block}"] * int(size)
        return (out + [None] * n)[:n]
    key = network.get("group_by") or ""
    return [None if a.get(key) is None else str(a.get(key)) for a in attributes]


def _agent_table(
    rows: list[dict[str, Any]], edges: list[list[int]], network: dict[str, Any]
) -> pa.Table:
    nodes = [int(r["node"]) for r in rows]
    degree = dict.fromkeys(nodes, 0)
    for u, v in edges:
        degree[int(u)] += 1
        degree[int(v)] += 1
    community = communities(nodes, edges)
    groups = block_groups(network, rows)
    full: list[dict[str, Any]] = []
    for row, group in zip(rows, groups, strict=True):
        big_five = row.get("big_five") or {}
        full.append(
            {
                **{k: row.get(k) for k in AGENT_SCHEMA.names},
                "group": group,
                "community": community[int(row["node"])],
                "degree": degree[int(row["node"])],
                "baseline": bool(row.get("baseline")),
                **{t: None if big_five.get(t) is None else float(big_five[t]) for t in TRAITS},
                "values": None if row.get("values") is None else list(row["values"]),
                "opinions": [
                    {"topic": str(t), "answer": str(v)}
                    for t, v in sorted((row.get("opinions") or {}).items())
                ],
            }
        )
    full.sort(key=lambda r: r["node"])
    return pa.Table.from_pylist(full, schema=AGENT_SCHEMA)


def _edge_table(keys: dict[int, str], edges: list[list[int]]) -> pa.Table:
    rows = [
        {"source": u, "target": v, "source_agent": keys[u], "target_agent": keys[v]}
        for u, v in sorted((min(int(a), int(b)), max(int(a), int(b))) for a, b in edges)
    ]
    return pa.Table.from_pylist(rows, schema=EDGE_SCHEMA)


def model_tables(model: SocialSimulation) -> tuple[pa.Table, pa.Table]:
    """The agents and edges tables of a freshly built simulation."""
    rows: list[dict[str, Any]] = []
    for agent in model.population:
        persona = agent.persona
        rows.append(
            {
                "agent": agent.key,
                "name": persona.name,
                "node": agent.node,
                "baseline": agent.baseline,
                "age": persona.age,
                "gender": persona.gender,
                "nationality": persona.nationality,
                "culture": persona.culture,
                "occupation": persona.occupation,
                "education": persona.education,
                "big_five": persona.big_five.model_dump(),
                "values": list(persona.values),
                "opinions": dict(persona.opinions),
            }
        )
    edges = sorted([min(u, v), max(u, v)] for u, v in model.graph.edges())
    network = model.scenario.network.model_dump(mode="json")
    keys = {r["node"]: r["agent"] for r in rows}
    return _agent_table(rows, edges, network), _edge_table(keys, edges)


def write_run_tables(run_dir: Path, model: SocialSimulation, redactor: Redactor) -> None:
    """Write ``agents.parquet`` and ``edges.parquet`` (atomically, secrets masked)."""
    agents, edges = model_tables(model)
    atomic_write_bytes(run_dir / AGENTS_FILE, parquet_bytes(mask_table(agents, redactor)))
    atomic_write_bytes(run_dir / EDGES_FILE, parquet_bytes(mask_table(edges, redactor)))


def start_event(run_dir: Path) -> dict[str, Any]:
    """The ``run_start`` event (line 1 of the transcript)."""
    with open(run_dir / TRANSCRIPT, encoding="utf-8") as fh:
        return dict(json.loads(fh.readline()))


def derived_tables(run_dir: Path) -> tuple[pa.Table, pa.Table]:
    """Both tables rebuilt from the transcript's ``run_start`` event (for older runs)."""
    start = start_event(run_dir)
    rows = [{**a, "baseline": "policy" in a} for a in start.get("agents", [])]
    edges = [list(e) for e in start.get("edges", [])]
    network = dict(read_manifest(run_dir).get("scenario", {}).get("network") or {})
    keys = {int(r["node"]): str(r["agent"]) for r in rows}
    return _agent_table(rows, edges, network), _edge_table(keys, edges)


def read_table(path: Path) -> pa.Table:
    """A parquet table of a run directory.

    Raises:
        ConfigError: The file is damaged (not parquet, cut short), naming it.
    """
    try:
        return pq.read_table(path)
    except pa.ArrowInvalid as exc:
        raise ConfigError(path, "", "damaged: not a readable parquet file") from exc


def _read(run_dir: Path, name: str, which: int) -> pd.DataFrame:
    path = run_dir / name
    table = read_table(path) if path.is_file() else derived_tables(run_dir)[which]
    return table.to_pandas(types_mapper=_nullable)


def _nullable(type_: pa.DataType) -> Any:
    if pa.types.is_boolean(type_):
        return pd.BooleanDtype()
    if pa.types.is_integer(type_):
        return pd.Int64Dtype()
    return None


def run_agents(run_dir: str | Path) -> pd.DataFrame:
    """A run's agents table (the file, or derived from the transcript for older runs)."""
    return _read(Path(run_dir), AGENTS_FILE, 0)


def run_edges(run_dir: str | Path) -> pd.DataFrame:
    """A run's edges table (the file, or derived from the transcript for older runs)."""
    return _read(Path(run_dir), EDGES_FILE, 1)


__all__ = [
    "AGENTS_FILE",
    "AGENT_SCHEMA",
    "EDGES_FILE",
    "EDGE_SCHEMA",
    "block_groups",
    "communities",
    "derived_tables",
    "model_tables",
    "run_agents",
    "run_edges",
    "run_opinions",
    "write_run_tables",
]


def run_opinions(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``opinions.parquet`` with ``probs`` as ``[{option, prob}]`` lists.

    Run directories written before ``probs`` was typed hold it as JSON text; it is read
    into the same form.
    """
    from simworld.runs.writer import option_probs

    table = read_table(Path(run_dir) / "opinions.parquet")
    df = table.to_pandas(types_mapper=_nullable)
    kind = table.schema.field("probs").type if "probs" in df else None
    if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        df["probs"] = [option_probs(v) for v in df["probs"]]
    elif "probs" in df:
        df["probs"] = [None if v is None else [dict(c) for c in v] for v in df["probs"]]
    return df
