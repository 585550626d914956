"""The memories of one simulation: each agent's store, made per the scenario and closed together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simworld.config.memory import MemoryConfig
from simworld.llm.embedding import Embedder, make_embedder
from simworld.memory.base import Memory, RecentMemory
from simworld.memory.chroma_store import ChromaSink
from simworld.memory.stream import MemoryStream

SNAPSHOT_FILE = "memories.jsonl"
BRANCH_FIXED_MEMORY_FIELDS = ("store", "embedding")


class MemorySystem:
    """The memories of one simulation: makes each agent's store and closes them together.

    For ``store: window`` every agent gets a :class:`RecentMemory`. For ``store: chroma``
    every agent gets a :class:`MemoryStream`; they share one embedder and one ChromaDB
    collection, kept in ``directory`` (``<run_dir>/memory``; created on first write, never
    shared between processes) or in memory when ``directory`` is ``None``. :meth:`close`
    writes ``memories.jsonl`` (the final state of every memory) there.

    Args:
        config: The scenario's memory settings.
        seed: The run's seed.
        directory: Where ChromaDB and the snapshot live.
        embedder: Overrides the configured embedder (tests).
    """

    def __init__(
        self,
        config: MemoryConfig,
        *,
        seed: int,
        directory: str | Path | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.directory = None if directory is None else Path(directory)
        self._embedder = embedder
        self.streams: dict[str, MemoryStream] = {}
        self.sink = ChromaSink(self.directory) if config.store == "chroma" else None
        self._closed = False

    @property
    def embedder(self) -> Embedder:
        """The shared embedder (loaded on first use)."""
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedding)
        return self._embedder

    def create(self, agent: str, owner: str) -> Memory:
        """A new, empty store for one agent."""
        if self.config.store == "window":
            return RecentMemory()
        stream = MemoryStream(
            agent=agent,
            owner=owner,
            config=self.config,
            embedder=self.embedder,
            seed=self.seed,
            sink=self.sink,
        )
        self.streams[agent] = stream
        return stream

    def reconfigure(self, config: MemoryConfig) -> None:
        """Continue under new memory settings (a counterfactual branch).

        Weights, decay, forgetting, reflection, importance mode and prompt rendering may
        change; the store and the embedding model may not (memories already stored and
        embedded would not match).

        Raises:
            ValueError: ``store`` or ``embedding`` changes.
        """
        for name in BRANCH_FIXED_MEMORY_FIELDS:
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(f"memory.{name} cannot change in a branch")
        self.config = config
        for stream in self.streams.values():
            stream.config = config

    def snapshot(self) -> list[dict[str, Any]]:
        """Every memory of every agent (agents in creation order, memories by id)."""
        return [row for stream in self.streams.values() for row in stream.rows()]

    def close(self) -> None:
        """Copy what is left to ChromaDB, write ``memories.jsonl`` and release the client."""
        if self._closed or self.sink is None:
            return
        self._closed = True
        try:
            for stream in self.streams.values():
                stream.persist()
        finally:
            self._write_snapshot()
            self.sink.close()

    def _write_snapshot(self) -> None:
        if self.directory is not None and self.streams:
            self.directory.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in self.snapshot()]
            (self.directory / SNAPSHOT_FILE).write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8"
            )
