"""The memory stream: importance, retrieval by recency, importance and relevance, forgetting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simworld.config.memory import MemoryConfig
from simworld.llm.embedding import Embedder
from simworld.memory.base import MemoryItem, memory_ref
from simworld.memory.chroma_store import ChromaRow, ChromaSink
from simworld.memory.forgetting import forget_mask, forgetting_seed, retention
from simworld.memory.importance import ImportanceSource, heuristic_importance
from simworld.memory.retrieval import ScoreWeights, retrieval_scores, top_k
from simworld.prompts import render as prompts
from simworld.support.events import EventType

INITIAL_CAPACITY = 16


@dataclass
class StoredMemory:
    """A memory in a stream: the item and its audit fields (scalars live in arrays).

    Attributes:
        id: Per-agent id, in storage order from 0.
        item: What was remembered.
        evidence: Ids a reflection rests on.
        importance_source: ``heuristic``, ``llm``, ``pending`` (an LLM rating is due),
            ``heuristic_fallback`` (the rating call failed; the heuristic value stands in) or
            ``given`` (set by the caller, e.g. tests and benchmarks).
        forgotten_step: Step at which it was forgotten.
        forgotten_retention: Its retention then.
    """

    id: int
    item: MemoryItem
    evidence: tuple[int, ...] = ()
    importance_source: ImportanceSource = "heuristic"
    forgotten_step: int | None = None
    forgotten_retention: float | None = None


@dataclass(frozen=True)
class Retrieved:
    """One retrieved memory with its score."""

    id: int
    item: MemoryItem
    score: float


@dataclass
class _Arrays:
    """The scalar state of a stream, one slot per memory id (grown by doubling)."""

    hours: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY))
    last_recall: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY))
    importance: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY))
    strength: np.ndarray = field(default_factory=lambda: np.ones(INITIAL_CAPACITY, np.int64))
    forgotten: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY, bool))
    reflection: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY, bool))

    def grow(self, needed: int) -> None:
        cap = len(self.hours)
        if needed <= cap:
            return
        new = max(needed, 2 * cap)
        for name, fill in (
            ("hours", 0.0),
            ("last_recall", 0.0),
            ("importance", 0.0),
            ("strength", 1),
            ("forgotten", False),
            ("reflection", False),
        ):
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[:cap] = old
            setattr(self, name, grown)


class MemoryStream:
    """One agent's memory stream (the ``chroma`` store).

    Every memory has a text, kind, step and simulated time, an importance (1..10), a
    strength S (1 when stored, +1 per recall), a last-recall time and, for reflections, the
    ids it rests on. The scalar state lives in numpy arrays and the embeddings in a numpy
    matrix: retrieval ranks exactly and deterministically over every memory not forgotten
    (ties to the lower id). A copy of texts, embeddings and metadata goes to ChromaDB.

    Time is simulated: step ``s`` happens at ``s · hours_per_step`` hours. Retrieval into a
    prompt is a recall (``touch``): it resets the memory's recency and forgetting clocks and
    adds 1 to its strength. Probes retrieve without touching, so measuring an opinion does
    not change what the agent will remember.

    Args:
        agent: The agent's id.
        owner: The agent's display name (speaker of its reflections).
        config: The scenario's memory settings.
        embedder: Sentence embedder.
        seed: The run's seed (stochastic forgetting).
        sink: Where rows are copied (ChromaDB); ``None`` keeps nothing outside memory.
    """

    def __init__(
        self,
        *,
        agent: str,
        owner: str,
        config: MemoryConfig,
        embedder: Embedder,
        seed: int = 0,
        sink: ChromaSink | None = None,
    ) -> None:
        self.agent = agent
        self.owner = owner
        self.config = config
        self.seed = seed
        self._embedder = embedder
        self._sink = sink
        self.memories: list[StoredMemory] = []
        self._a = _Arrays()
        self._emb: np.ndarray | None = None
        self._n_embedded = 0
        self._n_persisted = 0
        self._reflect_from = 0

    # -- storing -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.memories)

    def hours(self, step: int) -> float:
        """Simulated time of ``step`` in hours."""
        return step * self.config.hours_per_step

    def add(
        self,
        item: MemoryItem,
        *,
        evidence: Sequence[int] = (),
        importance: float | None = None,
        importance_source: ImportanceSource | None = None,
    ) -> int:
        """Store a memory and return its id.

        Without an explicit ``importance`` the heuristic rates it; in ``llm`` importance
        mode it is then marked ``pending`` until the step's rating call. An explicit
        ``importance`` without a source is marked ``given``.
        """
        mid = len(self.memories)
        if importance is None:
            importance = heuristic_importance(item.text, item.kind, owner=self.owner)
            if importance_source is None:
                llm = self.config.importance.mode == "llm" and item.kind != "reflection"
                importance_source = "pending" if llm else "heuristic"
        self.memories.append(StoredMemory(mid, item, tuple(evidence), importance_source or "given"))
        a = self._a
        a.grow(mid + 1)
        a.hours[mid] = a.last_recall[mid] = self.hours(item.step)
        a.importance[mid] = float(importance)
        a.strength[mid] = 1
        a.forgotten[mid] = False
        a.reflection[mid] = item.kind == "reflection"
        return mid

    def recall(self, topic: str, k: int) -> list[MemoryItem]:
        """The ``k`` most recent memories on ``topic`` not forgotten (``Memory`` protocol)."""
        if k <= 0:
            return []
        live = [m.item for m in self.memories if m.item.topic == topic and self.is_active(m.id)]
        return live[-k:]

    def ensure_embedded(self) -> None:
        """Embed the memories stored since the last call (in id order)."""
        n = len(self.memories)
        if self._n_embedded == n:
            return
        vecs = self._embedder.embed([m.item.text for m in self.memories[self._n_embedded : n]])
        if self._emb is None:
            self._emb = np.zeros((max(INITIAL_CAPACITY, n), vecs.shape[1]), dtype=np.float32)
        if n > len(self._emb):
            grown = np.zeros((max(n, 2 * len(self._emb)), self._emb.shape[1]), np.float32)
            grown[: self._n_embedded] = self._emb[: self._n_embedded]
            self._emb = grown
        self._emb[self._n_embedded : n] = vecs
        self._n_embedded = n

    def set_importance(
        self, ids: Sequence[int], values: Sequence[float], source: ImportanceSource
    ) -> None:
        """Replace the importance of ``ids`` (after a rating call)."""
        for mid, value in zip(ids, values, strict=True):
            self._a.importance[mid] = float(value)
            self.memories[mid].importance_source = source

    def pending_ratings(self) -> list[int]:
        """Ids waiting for an LLM importance rating."""
        return [m.id for m in self.memories if m.importance_source == "pending"]

    def importance(self, memory_id: int) -> float:
        """A memory's importance."""
        return float(self._a.importance[memory_id])

    def strength(self, memory_id: int) -> int:
        """A memory's strength S."""
        return int(self._a.strength[memory_id])

    def last_recall_hours(self, memory_id: int) -> float:
        """When a memory was last recalled (stored), in simulated hours."""
        return float(self._a.last_recall[memory_id])

    def is_active(self, memory_id: int) -> bool:
        """Whether the memory exists and is not forgotten."""
        return 0 <= memory_id < len(self.memories) and not bool(self._a.forgotten[memory_id])

    def active_ids(self) -> np.ndarray:
        """Ids of the memories not forgotten, ascending."""
        return np.flatnonzero(~self._a.forgotten[: len(self.memories)])

    def recent(self, n: int) -> list[int]:
        """The ``n`` latest memories not forgotten, oldest first."""
        return [int(i) for i in self.active_ids()[-n:]] if n > 0 else []

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(self, query: str, *, k: int, step: int, touch: bool) -> list[Retrieved]:
        """The ``k`` best memories for ``query`` at ``step``, best first.

        Score (Park et al. 2023; docs/metrics.md §6): ``w_rec·recency + w_imp·importance +
        w_rel·relevance``, each min–max normalised over the candidates, which are all
        memories not forgotten; ``recency = γ^(hours since last access)``, relevance is the
        cosine similarity of the embeddings. With ``touch`` the returned memories count as
        recalled: last access := now, strength += 1.
        """
        ids = self.active_ids()
        if k <= 0 or ids.size == 0:
            return []
        self.ensure_embedded()
        assert self._emb is not None
        now = self.hours(step)
        r = self.config.retrieval
        q = self._embedder.embed([query])[0]
        a = self._a
        scores = retrieval_scores(
            hours_since_access=now - a.last_recall[ids],
            importance=a.importance[ids],
            relevance=self._relevance(q)[ids],
            weights=ScoreWeights(r.recency_weight, r.importance_weight, r.relevance_weight),
            decay=r.recency_decay,
        )
        best = top_k(scores, ids, k)
        best_scores = scores[np.searchsorted(ids, best)]
        if touch:
            a.last_recall[best] = now
            a.strength[best] += 1
        return [
            Retrieved(i, self.memories[i].item, s)
            for i, s in zip(best.tolist(), best_scores.tolist(), strict=True)
        ]

    def _relevance(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of every stored memory to ``query`` (unit vectors: a dot product).

        One pass over the contiguous matrix (gathering the active rows first would copy
        them), with numpy's own single-threaded loop rather than BLAS: the result does not
        depend on the BLAS library or its thread count, and latency does not suffer from
        BLAS threads waiting for busy cores.
        """
        assert self._emb is not None
        return np.einsum("ij,j->i", self._emb[: len(self.memories)], query)

    def context_lines(self, query: str, *, k: int, step: int, touch: bool) -> list[str]:
        """Retrieved memories rendered for a prompt (order and style from the config)."""
        found = self.retrieve(query, k=k, step=step, touch=touch)
        if self.config.retrieval.order == "chronological":
            found.sort(key=lambda m: m.id)
        detailed = self.config.retrieval.style == "detailed"
        lines = []
        for m in found:
            it = m.item
            text = " ".join(it.text.split())
            if it.kind == "reflection":
                name = "memory_line_reflection_detailed" if detailed else "memory_line_reflection"
            else:
                name = "memory_line_detailed" if detailed else "memory_line"
            lines.append(prompts.render(name, speaker=it.speaker, text=text, step=it.step))
        return lines

    def labelled(self, ids: Sequence[int]) -> tuple[list[str], list[str]]:
        """Labels (``m12``) and ``[m12] speaker: text`` lines, for rating and reflection."""
        refs = [memory_ref(i) for i in ids]
        lines = [
            prompts.render(
                "memory_ref_line",
                ref=ref,
                speaker=self.memories[i].item.speaker,
                text=" ".join(self.memories[i].item.text.split()),
            )
            for i, ref in zip(ids, refs, strict=True)
        ]
        return refs, lines

    # -- forgetting --------------------------------------------------------------------------
    def forget(self, step: int) -> list[dict[str, Any]]:
        """One forgetting pass at ``step``; returns the ``memory_forgotten`` events.

        MemoryBank retention ``R = exp(-Δt / (c·S))`` (docs/metrics.md §6) of every memory not
        yet forgotten; the mode decides (see :func:`simworld.memory.forgetting.forget_mask`). A
        forgotten memory leaves retrieval and every prompt but stays in the stream, with
        the step and retention at which it went.
        """
        f = self.config.forgetting
        ids = self.active_ids()
        if f.mode == "off" or ids.size == 0:
            return []
        now = self.hours(step)
        a = self._a
        dt = now - a.last_recall[ids]
        ret = retention(dt, a.strength[ids], f.time_scale_hours)
        mask = forget_mask(
            ret,
            mode=f.mode,
            threshold=f.threshold,
            seed=forgetting_seed(self.seed, self.agent, step),
        )
        events = []
        for i, r, hours in zip(
            ids[mask].tolist(), ret[mask].tolist(), dt[mask].tolist(), strict=True
        ):
            a.forgotten[i] = True
            mem = self.memories[i]
            mem.forgotten_step, mem.forgotten_retention = step, r
            if self._sink is not None and i < self._n_persisted:
                self._sink.update(f"{self.agent}:{i}", self._forgotten_meta(mem))
            events.append(
                {
                    "type": EventType.MEMORY_FORGOTTEN.value,
                    "step": step,
                    "agent": self.agent,
                    "memory": i,
                    "kind": mem.item.kind,
                    "retention": r,
                    "strength": int(a.strength[i]),
                    "hours_since_recall": hours,
                    "mode": f.mode,
                }
            )
        return events

    # -- reflection bookkeeping --------------------------------------------------------------
    def importance_since_reflection(self) -> float:
        """Summed importance of the non-reflection memories stored since the last reflection."""
        n = len(self.memories)
        a = self._a
        window = slice(self._reflect_from, n)
        return float(a.importance[window][~a.reflection[window]].sum())

    def reflection_due(self) -> bool:
        """Whether that sum exceeds the reflection threshold (Park et al. 2023)."""
        r = self.config.reflection
        return r.enabled and self.importance_since_reflection() > r.threshold

    def mark_reflected(self) -> None:
        """Start a new importance sum after a reflection."""
        self._reflect_from = len(self.memories)

    # -- persistence -------------------------------------------------------------------------
    def persist(self) -> None:
        """Copy memories not yet copied to the ChromaDB sink."""
        if self._sink is None:
            return
        n = len(self.memories)
        if self._n_persisted == n:
            return
        self.ensure_embedded()
        assert self._emb is not None
        rows = []
        for mem in self.memories[self._n_persisted : n]:
            it = mem.item
            rows.append(
                ChromaRow(
                    id=f"{self.agent}:{mem.id}",
                    embedding=self._emb[mem.id].copy(),
                    document=it.text,
                    metadata={
                        "agent": self.agent,
                        "memory": mem.id,
                        "kind": it.kind,
                        "step": it.step,
                        "hours": float(self._a.hours[mem.id]),
                        "speaker": it.speaker,
                        "topic": it.topic,
                        "importance": self.importance(mem.id),
                        "importance_source": mem.importance_source,
                        "evidence": ",".join(map(str, mem.evidence)),
                        **self._forgotten_meta(mem),
                    },
                )
            )
        self._sink.add(rows)
        self._n_persisted = n

    @staticmethod
    def _forgotten_meta(mem: StoredMemory) -> dict[str, Any]:
        if mem.forgotten_step is None:
            return {"forgotten": False}
        return {
            "forgotten": True,
            "forgotten_step": mem.forgotten_step,
            "forgotten_retention": float(mem.forgotten_retention or 0.0),
        }

    def rows(self) -> list[dict[str, Any]]:
        """The full state, one dict per memory (the snapshot written at the end of a run)."""
        return [
            {
                "agent": self.agent,
                "memory": m.id,
                "kind": m.item.kind,
                "step": m.item.step,
                "hours": float(self._a.hours[m.id]),
                "speaker": m.item.speaker,
                "topic": m.item.topic,
                "text": m.item.text,
                "importance": self.importance(m.id),
                "importance_source": m.importance_source,
                "strength": self.strength(m.id),
                "last_recall_hours": self.last_recall_hours(m.id),
                "forgotten": m.forgotten_step is not None,
                "forgotten_step": m.forgotten_step,
                "forgotten_retention": m.forgotten_retention,
                "evidence": list(m.evidence),
            }
            for m in self.memories
        ]
