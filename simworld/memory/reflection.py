"""Reflection (Park et al. 2023): salient questions, retrieval per question, cited insights."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from simworld.llm.gateway import CallOutcome
from simworld.memory.base import MemoryItem, parse_ref
from simworld.memory.importance import (
    MAX_IMPORTANCE,
    MIN_IMPORTANCE,
    SCHEMA_CACHE,
    Ask,
    ImportanceSource,
    heuristic_importance,
)
from simworld.prompts import render as prompts
from simworld.support.events import EventType

if TYPE_CHECKING:
    from simworld.memory.stream import MemoryStream

QUESTIONS_PURPOSE = "reflect_questions"
INSIGHTS_PURPOSE = "reflect_insights"
QUESTION_MAX_CHARS = 150
INSIGHT_MAX_CHARS = 200


def questions_model(n: int) -> type[BaseModel]:
    """Structured output of the question call: ``{"questions": [str, ...]}`` (1..n)."""
    return _questions_model(n)


def _bounded_text(max_chars: int) -> Any:
    """A non-empty string whose JSON schema (not its validation) caps its length.

    The cap keeps grammar-constrained answers (the embedded model) inside the token budget;
    a provider that writes more is not failed for it.
    """
    bounded = {"type": "string", "minLength": 1, "maxLength": max_chars}
    return Annotated[str, Field(min_length=1), WithJsonSchema(bounded)]


@lru_cache(maxsize=SCHEMA_CACHE)
def _questions_model(n: int) -> type[BaseModel]:
    question = _bounded_text(QUESTION_MAX_CHARS)
    questions: Any = list[question]  # type: ignore[valid-type]  # a run-time type, as a value
    return create_model(
        "ReflectionQuestions",
        __config__=ConfigDict(extra="forbid"),
        questions=(questions, Field(min_length=1, max_length=n)),
    )


def insights_model(refs: Sequence[str], n: int, *, with_importance: bool) -> type[BaseModel]:
    """Structured output of an insight call.

    ``{"insights": [{"text": str, "evidence": [label, ...], "importance": 1..10}]}``; the
    JSON schema restricts ``evidence`` to the labels shown (an ``enum``, at most one per
    label) and ``text`` to :data:`INSIGHT_MAX_CHARS`, so that providers enforcing schemas
    can only cite those and finish inside ``memory.max_tokens``, but validation accepts any
    strings: a bad citation is then rejected on its own by :func:`check_citations` instead
    of failing the whole call. ``importance`` is asked only in ``llm`` importance mode.
    """
    return _insights_model(tuple(refs), n, with_importance)


@lru_cache(maxsize=SCHEMA_CACHE)
def _insights_model(refs: tuple[str, ...], n: int, with_importance: bool) -> type[BaseModel]:
    cited = {
        "type": "array",
        "items": {"type": "string", "enum": list(refs)},
        "minItems": 1,
        "maxItems": len(refs),
    }
    fields: dict[str, Any] = {
        "text": (_bounded_text(INSIGHT_MAX_CHARS), ...),
        "evidence": (Annotated[list[str], Field(min_length=1), WithJsonSchema(cited)], ...),
    }
    if with_importance:
        fields["importance"] = (int, Field(ge=MIN_IMPORTANCE, le=MAX_IMPORTANCE))
    insight = create_model("Insight", __config__=ConfigDict(extra="forbid"), **fields)
    # Inline the item schema (no "$defs"/"$ref"): simpler for providers and the fake.
    item: Any = Annotated[insight, WithJsonSchema(insight.model_json_schema())]
    insights: Any = list[item]  # a run-time type, as a value
    return create_model(
        "ReflectionInsights",
        __config__=ConfigDict(extra="forbid"),
        insights=(insights, Field(min_length=1, max_length=n)),
    )


def check_citations(
    stream: MemoryStream, cited: Sequence[str], presented: set[int]
) -> tuple[list[int], list[dict[str, str]]]:
    """Split an insight's citations into valid memory ids and rejected labels.

    A citation is valid when it is a label (``m12``) of a memory that exists, is not
    forgotten and was among the statements shown for the question. Duplicates count once.

    Returns:
        ``(valid ids ascending, [{"ref": label, "reason": ...}, ...])`` with reasons
        ``malformed``, ``unknown``, ``forgotten`` or ``not_shown``.
    """
    valid: set[int] = set()
    rejected: list[dict[str, str]] = []
    for ref in dict.fromkeys(cited):
        mid = parse_ref(ref)
        if mid is None:
            reason = "malformed"
        elif not 0 <= mid < len(stream):
            reason = "unknown"
        elif not stream.is_active(mid):
            reason = "forgotten"
        elif mid not in presented:
            reason = "not_shown"
        else:
            valid.add(mid)
            continue
        rejected.append({"ref": ref, "reason": reason})
    return sorted(valid), rejected


async def reflect(stream: MemoryStream, *, step: int, ask: Ask) -> tuple[list[CallOutcome], list]:
    """Reflect once (Park et al. 2023, as in docs/metrics.md §6).

    1. Ask for ``reflection.questions`` salient questions about the ``reflection.recent``
       latest memories not forgotten (one call).
    2. Retrieve ``reflection.evidence_k`` memories per question (a recall: they are
       touched), all before any insight is stored.
    3. Ask, per question, for up to ``reflection.insights`` insights citing their evidence
       (the calls run concurrently; ``index`` = question number).
    4. Store every insight with at least one valid citation as a memory of kind
       ``reflection`` whose ``evidence`` are the valid ids; log a ``reflection`` event per
       insight, stored or not, with the rejected citations.

    The importance sum restarts whatever the outcome, so a failing model is not asked
    again at every step.

    Returns:
        The calls made (in order) and the ``reflection`` events.
    """
    cfg = stream.config.reflection
    llm_importance = stream.config.importance.mode == "llm"
    stream.mark_reflected()
    recent = stream.recent(cfg.recent)
    if not recent:
        return [], []
    _, lines = stream.labelled(recent)
    user = prompts.render("reflection_questions", memories="\n".join(lines), n=cfg.questions)
    asked = await ask(user, QUESTIONS_PURPOSE, 0, questions_model(cfg.questions))
    calls = [asked]
    if not asked.ok or asked.parsed is None:
        return calls, []
    questions = [" ".join(q.split()) for q in asked.parsed["questions"]][: cfg.questions]
    jobs = []
    for qi, question in enumerate(questions):
        found = stream.retrieve(question, k=cfg.evidence_k, step=step, touch=True)
        ids = sorted(m.id for m in found)
        if ids:
            jobs.append((qi, question, ids))
    hint = prompts.render("reflection_importance_hint") if llm_importance else ""
    pending = []
    for qi, question, ids in jobs:
        refs, lines = stream.labelled(ids)
        user = prompts.render(
            "reflection_insights",
            question=question,
            memories="\n".join(lines),
            n=cfg.insights,
            importance_hint=hint,
        )
        schema = insights_model(refs, cfg.insights, with_importance=llm_importance)
        pending.append(ask(user, INSIGHTS_PURPOSE, qi, schema))
    outcomes = list(await asyncio.gather(*pending))
    calls.extend(outcomes)
    events = []
    for (qi, question, ids), outcome in zip(jobs, outcomes, strict=True):
        if not outcome.ok or outcome.parsed is None:
            continue
        for insight in outcome.parsed["insights"][: cfg.insights]:
            events.append(_store(stream, insight, question, qi, set(ids), step, llm_importance))
    return calls, events


def _store(
    stream: MemoryStream,
    insight: dict[str, Any],
    question: str,
    qi: int,
    shown: set[int],
    step: int,
    llm_importance: bool,
) -> dict[str, Any]:
    text = " ".join(str(insight["text"]).split())
    valid, rejected = check_citations(stream, insight["evidence"], shown)
    if llm_importance:
        importance = float(insight["importance"])
        source: ImportanceSource = "llm"
    else:
        importance, source = float(heuristic_importance(text, "reflection")), "heuristic"
    memory_id = None
    if valid and text:
        item = MemoryItem(step=step, kind="reflection", speaker=stream.owner, topic="", text=text)
        memory_id = stream.add(
            item, evidence=valid, importance=importance, importance_source=source
        )
    return {
        "type": EventType.REFLECTION.value,
        "step": step,
        "agent": stream.agent,
        "question_index": qi,
        "question": question,
        "text": text,
        "memory": memory_id,
        "stored": memory_id is not None,
        "evidence": valid,
        "rejected_evidence": rejected,
        "importance": importance,
        "importance_source": source,
    }
