"""The ``memory:`` section of a scenario: store, importance, retrieval, forgetting, reflection."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_HOURS_PER_STEP = 24.0
DEFAULT_RECENCY_DECAY = 0.995  # γ per simulated hour (Park et al. 2023)
DEFAULT_WEIGHT = 1.0  # the paper weighs recency, importance and relevance equally
DEFAULT_TIME_SCALE_HOURS = 72.0  # c in R = exp(-Δt / (c·S))
DEFAULT_FORGET_THRESHOLD = 0.05
DEFAULT_REFLECTION_THRESHOLD = 150.0  # summed importance (Park et al. 2023)
DEFAULT_REFLECTION_RECENT = 100  # memories shown when asking for questions (the paper's 100)
DEFAULT_REFLECTION_QUESTIONS = 3
DEFAULT_REFLECTION_INSIGHTS = 5
DEFAULT_EVIDENCE_K = 10
# Room for the JSON answers of memory upkeep: a batch of 40 importance ratings, or 5 insights
# of up to 200 characters citing up to 10 memories each.
DEFAULT_MEMORY_MAX_TOKENS = 640
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImportanceConfig(_Strict):
    """How a memory's importance (1..10) is rated when it is stored.

    ``heuristic`` is cheap and deterministic (see :mod:`simworld.memory.importance`); ``llm`` asks
    the agent's model once per agent and step for all of the step's new memories. A failed
    rating call leaves the memories with their heuristic value, flagged
    ``importance_source = "heuristic_fallback"``.
    """

    mode: Literal["heuristic", "llm"] = "heuristic"


class RetrievalConfig(_Strict):
    """Which memories reach a prompt, and how they are shown.

    Attributes:
        k: Memories per prompt; ``None`` uses ``protocol.memory_window``.
        recency_weight: ``w_rec`` of the retrieval score.
        importance_weight: ``w_imp``.
        relevance_weight: ``w_rel``.
        recency_decay: γ of ``recency = γ^(hours since last access)``.
        query: What relevance is measured against: the topic statement, or the statement
            plus the latest message the agent has heard in this conversation.
        order: Order in the prompt: oldest first, or best score first.
        style: ``plain`` (``- speaker: text``) or ``detailed`` (adds the step).
    """

    k: int | None = Field(default=None, ge=0)
    recency_weight: float = Field(default=DEFAULT_WEIGHT, ge=0.0)
    importance_weight: float = Field(default=DEFAULT_WEIGHT, ge=0.0)
    relevance_weight: float = Field(default=DEFAULT_WEIGHT, ge=0.0)
    recency_decay: float = Field(default=DEFAULT_RECENCY_DECAY, gt=0.0, le=1.0)
    query: Literal["topic", "topic_and_heard"] = "topic_and_heard"
    order: Literal["chronological", "score"] = "chronological"
    style: Literal["plain", "detailed"] = "plain"


class ForgettingConfig(_Strict):
    """MemoryBank forgetting: retention ``R = exp(-Δt / (c·S))`` (Zhong et al. 2023).

    Attributes:
        mode: ``off``; ``threshold`` forgets when ``R < threshold``; ``stochastic`` forgets
            when a seeded uniform draw exceeds ``R`` (one draw per memory per step).
        time_scale_hours: ``c``, in simulated hours.
        threshold: Retention below which a memory is forgotten (``threshold`` mode).
    """

    mode: Literal["off", "threshold", "stochastic"] = "threshold"
    time_scale_hours: float = Field(default=DEFAULT_TIME_SCALE_HOURS, gt=0.0)
    threshold: float = Field(default=DEFAULT_FORGET_THRESHOLD, gt=0.0, lt=1.0)


class ReflectionConfig(_Strict):
    """Reflection (Park et al. 2023): questions, retrieval per question, cited insights.

    Attributes:
        enabled: Whether agents reflect at all.
        threshold: Reflect when the summed importance of the non-reflection memories stored
            since the last reflection exceeds this.
        recent: How many of the latest memories the question prompt shows.
        questions: Questions asked per reflection.
        insights: Insights asked per question.
        evidence_k: Memories retrieved per question.
    """

    enabled: bool = True
    threshold: float = Field(default=DEFAULT_REFLECTION_THRESHOLD, gt=0.0)
    recent: int = Field(default=DEFAULT_REFLECTION_RECENT, ge=1)
    questions: int = Field(default=DEFAULT_REFLECTION_QUESTIONS, ge=1, le=10)
    insights: int = Field(default=DEFAULT_REFLECTION_INSIGHTS, ge=1, le=10)
    evidence_k: int = Field(default=DEFAULT_EVIDENCE_K, ge=1)


class EmbeddingConfig(_Strict):
    """The sentence-embedding model used for relevance.

    ``local`` runs all-MiniLM-L6-v2 (int8 ONNX) on the CPU, offline; ``litellm`` calls
    ``litellm.embedding`` with ``model`` (a provider's embedding model; needs the network).
    """

    provider: Literal["local", "litellm"] = "local"
    model: str = LOCAL_EMBEDDING_MODEL

    @model_validator(mode="after")
    def _known_local(self) -> EmbeddingConfig:
        if self.provider == "local" and self.model != LOCAL_EMBEDDING_MODEL:
            raise ValueError(
                f"model: the local provider ships only {LOCAL_EMBEDDING_MODEL!r}; "
                "use provider: litellm for other models"
            )
        return self


class MemoryConfig(_Strict):
    """How agents remember.

    ``window`` is the simple recency window (``protocol.memory_window`` most recent memories
    on the topic; the other fields are ignored). ``chroma`` is the memory stream: importance,
    scored retrieval, forgetting and reflection, with texts and embeddings kept in ChromaDB
    under ``<run_dir>/memory/``.

    Attributes:
        store: ``window`` or ``chroma``.
        hours_per_step: Simulated hours per step (the clock of recency and forgetting).
        max_tokens: Output limit of the memory upkeep calls (importance ratings, reflection
            questions and insights), whose JSON answers need more room than
            ``llm.max_tokens`` usually gives a message.
    """

    store: Literal["window", "chroma"] = "window"
    hours_per_step: float = Field(default=DEFAULT_HOURS_PER_STEP, gt=0.0)
    max_tokens: int = Field(default=DEFAULT_MEMORY_MAX_TOKENS, ge=1, le=32_768)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    reflection: ReflectionConfig = Field(default_factory=ReflectionConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
