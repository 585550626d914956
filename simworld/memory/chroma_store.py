"""The ChromaDB copy of a run's memory streams: texts, embeddings and metadata, on disk."""

from __future__ import annotations

import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLLECTION = "memories"
FLUSH_ROWS = 1024
HNSW_CONFIG = {"space": "cosine", "ef_construction": 40, "max_neighbors": 12}
Metadata = dict[str, str | int | float | bool]


@dataclass(frozen=True)
class ChromaRow:
    """One memory as ChromaDB stores it."""

    id: str
    embedding: np.ndarray
    document: str
    metadata: Metadata


class ChromaSink:
    """Write-behind storage of memories in one ChromaDB collection per run.

    ChromaDB is the durable, queryable record of what every agent remembered (texts,
    embeddings, metadata with ``agent`` and ``memory`` id, and ``forgotten`` once a memory
    is forgotten). It is deliberately not on the simulation's decision path: its HNSW index
    comes out different on every build even from identical inserts, so approximate
    searches are not reproducible; the memory streams rank memories exactly in numpy
    instead. Writes (about 0.5 ms a row) therefore run on one background thread, in order,
    in batches of ``flush_rows`` (``upsert``: writing a row twice is harmless);
    :meth:`close` waits for them and raises the first error.

    Args:
        directory: Folder of an embedded ``PersistentClient`` (one per run, never shared by
            two processes); ``None`` for an in-memory client (tests).
        flush_rows: Buffered rows that trigger a write.
    """

    def __init__(self, directory: str | Path | None, *, flush_rows: int = FLUSH_ROWS) -> None:
        self.directory = None if directory is None else Path(directory)
        self._flush_rows = flush_rows
        self._rows: list[ChromaRow] = []
        self._updates: list[tuple[str, Metadata]] = []
        self._futures: list[Future[None]] = []
        self._worker: ThreadPoolExecutor | None = None
        self._client: Any = None
        self._collection: Any = None
        # In-process clients share one store: give each sink its own collection.
        self._name = COLLECTION if self.directory else f"{COLLECTION}-{uuid.uuid4().hex}"

    # -- runs on the worker thread -----------------------------------------------------------
    def _open(self) -> Any:
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            if self.directory is None:
                self._client = chromadb.EphemeralClient(settings=settings)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(
                    path=str(self.directory), settings=settings
                )
            self._collection = self._client.get_or_create_collection(
                self._name, configuration={"hnsw": HNSW_CONFIG}, embedding_function=None
            )
        return self._collection

    def _write(self, rows: list[ChromaRow], updates: list[tuple[str, Metadata]]) -> None:
        col = self._open()
        batch = max(1, int(self._client.get_max_batch_size()))
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            col.upsert(
                ids=[r.id for r in chunk],
                embeddings=np.stack([r.embedding for r in chunk]),
                documents=[r.document for r in chunk],
                metadatas=[r.metadata for r in chunk],
            )
        for start in range(0, len(updates), batch):
            chunk_u = updates[start : start + batch]
            col.update(ids=[u[0] for u in chunk_u], metadatas=[u[1] for u in chunk_u])

    # -- called by the simulation ------------------------------------------------------------
    def add(self, rows: list[ChromaRow]) -> None:
        """Buffer new rows; hand them to the writer when the buffer is full."""
        self._rows.extend(rows)
        if len(self._rows) >= self._flush_rows:
            self.flush()

    def update(self, row_id: str, metadata: Metadata) -> None:
        """Merge metadata values into a row (written after the row itself)."""
        self._updates.append((row_id, metadata))

    def flush(self) -> None:
        """Hand everything buffered to the background writer."""
        if not self._rows and not self._updates:
            return
        rows, updates = self._rows, self._updates
        self._rows, self._updates = [], []
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chroma")
        self._futures.append(self._worker.submit(self._write, rows, updates))

    def wait(self) -> None:
        """Flush and wait until everything is written; raises the first write error."""
        self.flush()
        futures, self._futures = self._futures, []
        for future in futures:
            future.result()

    @property
    def collection(self) -> Any:
        """The ChromaDB collection, with every buffered write done (for analysis)."""
        self.wait()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chroma")
        return self._worker.submit(self._open).result()

    def search(self, agent: str, embedding: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Approximate nearest memories of ``agent`` (for analysis, not for the simulation).

        Returns:
            ``(row id, cosine distance)`` pairs, nearest first.
        """
        col = self.collection
        if col.count() == 0:
            return []
        found = col.query(
            query_embeddings=np.asarray(embedding, dtype=np.float32)[None],
            n_results=k,
            where={"agent": agent},
            include=["distances"],
        )
        return list(zip(found["ids"][0], found["distances"][0], strict=True))

    def close(self) -> None:
        """Write what is buffered and release the client (an in-memory collection is dropped)."""
        try:
            self.wait()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None
            if self._client is not None:
                if self.directory is None:
                    self._client.delete_collection(self._name)
                self._client.close()
            self._client = self._collection = None
