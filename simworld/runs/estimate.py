"""Size of a run, estimated from its scenario before anything is built or written.

A run that cannot fit (a complete graph of 100,000 agents; ``rounds: 1000000000`` in group
mode) is refused at once, with the estimate in the message, instead of running until the
machine runs out of memory or disk. ``simworld run --force`` runs it anyway.

The figures are coarse upper estimates per item (see the constants), enough to tell a run
that fits from one that is orders of magnitude too large.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from simworld.config.scenario import (
    BarabasiAlbertNetwork,
    CompleteNetwork,
    EdgeListNetwork,
    ErdosRenyiNetwork,
    Scenario,
    StochasticBlockNetwork,
    WattsStrogatzNetwork,
)
from simworld.errors import ConfigError
from simworld.llm.providers.local_engine import PREFIX_CACHE_BYTES, PROMPT_CACHE_BYTES

EDGE_BYTES = 500
"""Memory per edge: networkx adjacency both ways, built once by the generator, once copied."""
TURN_BYTES = 400
"""Memory per planned speaking turn of a step (the turn, its prompt fields and outcome)."""
RECIPIENT_BYTES = 40
"""Memory per recipient of a message (the plan's listener lists), and transcript bytes per
recipient a message lists (a post to all of the speaker's neighbours lists none: its ``to`` is
``{"neighbours_of": ...}``, :mod:`simworld.support.recipients`)."""
EVENT_BYTES = 600
"""Transcript bytes per event (a message, a probe answer, a model call record)."""
ROW_BYTES = 300
"""Memory per opinion row kept for the trackers."""
MEMORY_SHARE = 0.8
"""Share of the machine's memory a run may plan to use."""
LOCAL_MODEL_BYTES = 512 * 1024 * 1024
"""Memory of an embedded ``local/`` model's process besides its saved states: the weights
and the KV cache (the default Gemma 3 270M file and context window; ``batch`` adds to it)."""
ENGINE_BYTES = 400 * 1024 * 1024
"""Memory allowed for each serial engine beyond the first (``engines``: its own llama.cpp
context and buffers; the weights' pages are shared)."""
SLOT_BYTES = 80 * 1024 * 1024
"""Memory of one decode slot of a serial engine (``slots``): the key/value stream of a
context window of the default size (Gemma 3 270M: 18 layers, 1 KiB a token, 4096 tokens)."""


@dataclass(frozen=True)
class Estimate:
    """What a run needs, roughly.

    Attributes:
        edges: Edges of the graph.
        turns_per_step: Speaking turns planned in one step.
        memory_bytes: Peak memory (graph, one step's plan and events, opinion rows, and the
            embedded model's process when ``llm.model`` is a ``local/`` model).
        disk_bytes: Transcript and tables at the end.
        dominant: The scenario field that drives the largest term (named in errors).
    """

    edges: int
    turns_per_step: int
    memory_bytes: int
    disk_bytes: int
    dominant: str


def _edges(scenario: Scenario) -> int:
    n, net = scenario.population.size, scenario.network
    pairs = n * (n - 1) // 2
    if isinstance(net, CompleteNetwork):
        return pairs
    if isinstance(net, ErdosRenyiNetwork):
        return int(net.p * pairs)
    if isinstance(net, WattsStrogatzNetwork):
        return n * net.k // 2
    if isinstance(net, BarabasiAlbertNetwork):
        return n * net.m
    if isinstance(net, StochasticBlockNetwork):
        return int(max(net.p_in, net.p_out) * pairs)
    if isinstance(net, EdgeListNetwork):
        try:
            with open(net.path, "rb") as fh:
                return min(pairs, sum(1 for _ in fh))
        except OSError:
            return 0  # reported when the graph is built
    return pairs  # pragma: no cover - the union admits nothing else


def model_bytes(scenario: Scenario) -> int:
    """Memory of the model's process on this machine: an embedded ``local/`` model's weights,
    KV cache and saved states at most (0 for a model served elsewhere)."""
    if not scenario.llm.model.startswith("local/"):
        return 0
    from simworld.llm.providers.local import engine_options

    config = engine_options(scenario.llm.model)
    engines, slots = (1, 1) if config is None else (config.engines, config.slots)
    slot_bytes = engines * slots * SLOT_BYTES if slots > 1 else 0
    return (
        LOCAL_MODEL_BYTES
        + (engines - 1) * ENGINE_BYTES
        + slot_bytes
        + PREFIX_CACHE_BYTES
        + PROMPT_CACHE_BYTES
    )


def estimate(scenario: Scenario) -> Estimate:
    """Estimate the size of a run of ``scenario`` (arithmetic only: nothing is built)."""
    n, protocol = scenario.population.size, scenario.protocol
    edges = _edges(scenario)
    topics = len(scenario.topics)
    if protocol.mode == "group":
        turns = n * protocol.rounds
        recipients = turns * (protocol.group_size - 1)
        driver = "protocol.rounds"
    elif protocol.mode == "asch":
        turns = n * topics
        recipients = 0
        driver = "population.size"
    else:
        turns = n
        recipients = 2 * edges if protocol.mode == "broadcast" else n
        driver = "network"
    probes = len(protocol.probe_steps()) * n * topics
    step_bytes = turns * (TURN_BYTES + EVENT_BYTES) + recipients * RECIPIENT_BYTES
    graph_bytes = edges * EDGE_BYTES
    model = model_bytes(scenario)
    memory = graph_bytes + step_bytes + probes * ROW_BYTES + model
    listed = 0 if protocol.mode == "broadcast" else recipients  # broadcast: compact ``to``
    disk = protocol.steps * (turns * EVENT_BYTES + listed * RECIPIENT_BYTES) + probes * (
        2 * EVENT_BYTES
    )
    if graph_bytes >= step_bytes and edges:
        driver = "network"
    if model > max(graph_bytes, step_bytes):
        driver = "llm.model"
    return Estimate(edges, turns, memory, disk, driver)


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_feasible(scenario: Scenario, *, source: str | Path, out_root: Path) -> Estimate:
    """Refuse a run that cannot fit in this machine's memory or on its disk.

    Args:
        scenario: The validated scenario.
        source: The scenario file, named in errors.
        out_root: Where the run directory will be (its disk's free space counts).

    Returns:
        The estimate.

    Raises:
        ConfigError: The estimated memory or disk need is more than there is.
    """
    est = estimate(scenario)
    limit = int(machine_memory() * MEMORY_SHARE)
    if est.memory_bytes > limit:
        raise ConfigError(
            source,
            est.dominant,
            f"the run needs about {_size(est.memory_bytes)} of memory ({est.edges} edges, "
            f"{est.turns_per_step} turns per step), more than the {_size(limit)} it may use "
            "here; make it smaller, or pass --force to run it anyway",
        )
    root = next((p for p in (out_root, *out_root.parents) if p.exists()), Path("."))
    disk = shutil.disk_usage(root)
    # a file system of size 0 (/proc, /sys) holds no files: creating the run says why
    if disk.total > 0 and est.disk_bytes > disk.free:
        raise ConfigError(
            source,
            "protocol.steps",
            f"the run would write about {_size(est.disk_bytes)}, more than the "
            f"{_size(disk.free)} free under {root}; make it smaller, or pass --force",
        )
    return est
