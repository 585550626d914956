"""Helpers for the memory tests: a controllable embedder and a unique-text language model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from simworld.config.memory import MemoryConfig
from simworld.llm.gateway import CallOutcome
from simworld.llm.litellm_backend import CallIdentity, Completion, LanguageModel, LLMRequest
from simworld.memory.stream import MemoryStream


class StubEmbedder:
    """Texts containing a key word map to that word's axis; everything else to axis 0."""

    name = "stub"

    def __init__(self, words: list[str] | None = None) -> None:
        self.words = words or []

    def embed(self, texts):
        out = np.zeros((len(texts), len(self.words) + 1), dtype=np.float32)
        for row, text in enumerate(texts):
            axis = next((i + 1 for i, w in enumerate(self.words) if w in text), 0)
            out[row, axis] = 1.0
        return out


def stream(config: MemoryConfig | None = None, words: list[str] | None = None) -> MemoryStream:
    """A memory stream with the stub embedder and no ChromaDB copy."""
    cfg = config or MemoryConfig(store="chroma")
    return MemoryStream(agent="ana", owner="Ana Silva", config=cfg, embedder=StubEmbedder(words))


def outcome(parsed: dict[str, Any] | None, *, purpose: str = "x", index: int = 0) -> CallOutcome:
    """A hand-made call outcome (``None`` = a failed call)."""
    ok = parsed is not None
    return CallOutcome(
        key=f"k-{purpose}-{index}",
        identity=CallIdentity(0, "ana", 1, purpose, index),
        model="stub",
        status="ok" if ok else "failed",
        text=json.dumps(parsed) if ok else None,
        parsed=parsed,
        attempts=1,
        errors=[] if ok else [{"attempt": 0, "kind": "timeout", "message": "stub"}],
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
    )


def _fill(schema: dict[str, Any], tag: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: _fill(v, f"{tag}.{k}") for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [_fill(schema.get("items", {}), f"{tag}.0")]
    if kind == "integer":
        return int(schema.get("minimum", 0)) + 4
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return True
    return f"unique {tag}"


class UniqueTextModel(LanguageModel):
    """Answers every call with a text no other call produces; records every request."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self.on_request = None

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        ident = request.identity
        tag = f"{ident.agent}/{ident.step}/{ident.purpose}/{ident.index}"
        if request.schema is not None:
            return Completion(text=json.dumps(_fill(request.schema, tag)))
        return Completion(text=f"Note {tag}: that is what I think.")
