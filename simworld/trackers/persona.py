"""Persona trackers: inconstancy in discussions (§1), statements, personality (§4), memory."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from simworld.measures import (
    AgentRecord,
    Discussion,
    find_impersonations,
    persona_descriptors,
    score_bfi,
    trait_distance,
)
from simworld.measures.inconstancy import discussion_rows
from simworld.trackers.base import (
    BuiltinTracker,
    Event,
    Observations,
    Row,
    RowGroups,
    in_ranges,
    turn_key,
)


def _by_step(items: dict[int, list[int]], step: int, position: int) -> None:
    items.setdefault(step, []).append(position)


def _near_probes(store: Observations, probes: list[Event], items: dict[int, list[int]]) -> set[int]:
    """Positions of the items (filed by step) whose nearest probes changed with ``probes``."""
    if not probes:
        return set()
    ranges = store.around_probes(p["step"] for p in probes)
    return {
        pos for step, positions in items.items() if in_ranges(step, ranges) for pos in positions
    }


class InconstancyTracker(BuiltinTracker):
    """Private vs public conformity and confabulation per discussion block (docs/metrics.md §1).

    A discussion block is one pair or group conversation (a ``conversation`` event; a
    broadcast step has none). For each member i: ``O_i`` = its private answer on the
    block's topic at the latest probe step before the block, ``D_i`` = the stances of its
    messages in the block in speaking order ("no position" and failed stance calls are
    entries without a value, so they are never counted), ``R_i`` = its private answer at
    the first probe step at or after the block. ``G`` is the plurality of all stated
    answers (undefined on a tie). Flags come from :func:`simworld.measures.inconstancy_table`
    (null where an answer they need is missing); ``position`` is the member's place in the
    speaking order; ``own_share`` the share of the members (with an onboarding answer) that
    held the member's own ``O_i`` (the grouping of the paper's released code). Without
    stance extraction every ``D_i`` is empty, so G is undefined.
    A block's rows are recomputed when its messages, their stances or its probes arrive.
    """

    name = "inconstancy"
    reads = ("probe", "message", "stance", "conversation")
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("conversation", pa.int64()),
            ("topic", pa.string()),
            ("mode", pa.string()),
            ("before_step", pa.int64()),
            ("after_step", pa.int64()),
            ("agent", pa.string()),
            ("position", pa.int64()),
            ("group_size", pa.int64()),
            ("onboarding", pa.string()),
            ("reflection", pa.string()),
            ("group", pa.string()),
            ("n_stated", pa.int64()),
            ("diversity", pa.float64()),
            ("n_missing_onboarding", pa.int64()),
            ("changed", pa.bool_()),
            ("private_conformity", pa.bool_()),
            ("public_conformity", pa.bool_()),
            ("confabulation", pa.bool_()),
            ("own_share", pa.float64()),
        ]
    )

    def reset(self) -> None:
        """Forget every block."""
        super().reset()
        self._frame = RowGroups(ordered=False)
        self._at_step: dict[int, list[int]] = {}  # step → positions of its conversations
        self._said: dict[tuple[int, str], list[Event]] = {}  # (step, agent) → messages

    def refresh(self) -> list[Row]:
        """Rows in conversation order, members in speaking order."""
        store = self.store
        new = self.cursor.new(store.conversations)
        dirty = set(range(len(store.conversations) - len(new), len(store.conversations)))
        for pos in dirty:
            _by_step(self._at_step, store.conversations[pos]["step"], pos)
        for m in self.cursor.new(store.messages):
            self._said.setdefault((m["step"], m["agent"]), []).append(m)
            dirty.update(self._at_step.get(m["step"], []))
        for s in self.cursor.new(store.stance_log):
            dirty.update(self._at_step.get(s["step"], []))
        dirty |= _near_probes(store, self.cursor.new(store.probes), self._at_step)
        for pos in sorted(dirty):
            self._frame.put(pos, self._block_rows(store.conversations[pos]))
        return self._frame.rows()

    def _stated(self, step: int, agent: str) -> tuple[str | None, ...]:
        """D_i: the stances of the agent's messages at ``step``, in speaking order."""
        said = []
        for message in self._said.get((step, agent), []):
            stance = self.store.stance_of(message)
            said.append((message["turn"], None if stance is None else stance.get("answer")))
        return tuple(a for _, a in sorted(said))

    def _block_rows(self, conv: Event) -> list[Row]:
        step, topic = conv["step"], conv["topic"]
        before = self.store.probe_before(step)
        after = self.store.probe_at_or_after(step)
        records = tuple(
            AgentRecord(
                agent=agent,
                onboarding=self.store.private_answer(topic, agent, before),
                reflection=self.store.private_answer(topic, agent, after),
                stated=self._stated(step, agent),
                position=pos,
            )
            for pos, agent in enumerate(conv["members"], start=1)
        )
        extra = {
            "step": step,
            "conversation": conv["index"],
            "topic": topic,
            "mode": conv.get("mode"),
            "before_step": before,
            "after_step": after,
            "group_size": len(records),
        }
        disc = Discussion(agents=records, id=conv["index"])
        return [self.tidier.row(r | extra) for r in discussion_rows(disc)]


class StatementTracker(BuiltinTracker):
    """Every public message: its stance, public/private consistency and impersonation (§1).

    ``stance_status`` is ``stated``, ``none`` (no position), ``failed`` (the stance call
    failed) or ``absent`` (stance extraction off). ``private_before``/``private_after`` are
    the speaker's probe answers on the topic at the nearest probe steps before / at-or-after
    the message; ``public_private_mismatch`` is ``stance != private_before`` (null unless
    both exist). ``impersonation`` is the reference pattern measure of
    :func:`simworld.measures.find_impersonations` (always computed), with the descriptors
    found in ``impersonation_hits``; ``judge`` is the optional LLM judge's verdict, beside it.
    A message's row is recomputed when its stance, its judge or its nearest probes arrive.
    """

    name = "statements"
    reads = ("probe", "message", "stance", "impersonation_judge")
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("agent", pa.string()),
            ("topic", pa.string()),
            ("turn", pa.int64()),
            ("n_listeners", pa.int64()),
            ("stance", pa.string()),
            ("stance_status", pa.string()),
            ("private_before", pa.string()),
            ("private_after", pa.string()),
            ("public_private_mismatch", pa.bool_()),
            ("impersonation", pa.bool_()),
            ("impersonation_hits", pa.string()),
            ("judge", pa.bool_()),
        ]
    )

    def reset(self) -> None:
        """Forget every message's row."""
        super().reset()
        self._hits: list[list[str]] = []  # per message, in store order: the costly part
        self._frame = RowGroups(ordered=False)
        self._at_step: dict[int, list[int]] = {}  # step → positions of its messages
        self._at_turn: dict[tuple[int, str, int], list[int]] = {}

    def _impersonations(self) -> list[list[str]]:
        messages = self.store.messages
        if len(self._hits) < len(messages):
            agents = self.context.agents
            own = {k: persona_descriptors(a.nationality, a.name) for k, a in agents.items()}
            everyone = frozenset(d for ds in own.values() for d in ds)
            for m in messages[len(self._hits) :]:
                # only descriptors that occur in the text can match: same hits, far less work
                text = " ".join(m["text"].split()).casefold()
                present = [d for d in everyone if d.casefold() in text]
                mine = own.get(m["agent"], frozenset())
                self._hits.append(find_impersonations(m["text"], mine, present) if present else [])
        return self._hits

    def refresh(self) -> list[Row]:
        """Rows in transcript order."""
        store, messages = self.store, self.store.messages
        new = self.cursor.new(messages)
        dirty = set(range(len(messages) - len(new), len(messages)))
        for pos in dirty:
            _by_step(self._at_step, messages[pos]["step"], pos)
            self._at_turn.setdefault(turn_key(messages[pos]), []).append(pos)
        for e in (*self.cursor.new(store.stance_log), *self.cursor.new(store.judge_log)):
            dirty.update(self._at_turn.get(turn_key(e), []))
        dirty |= _near_probes(store, self.cursor.new(store.probes), self._at_step)
        hits = self._impersonations()
        for pos in sorted(dirty):
            self._frame.put(pos, [self.tidier.row(self._row(messages[pos], hits[pos]))])
        return self._frame.rows()

    def _row(self, m: Event, hits: list[str]) -> Row:
        stance = self.store.stance_of(m)
        judge = self.store.judges.get(turn_key(m))
        before = self.store.private_answer(
            m["topic"], m["agent"], self.store.probe_before(m["step"])
        )
        after = self.store.private_answer(
            m["topic"], m["agent"], self.store.probe_at_or_after(m["step"])
        )
        said = None if stance is None else stance.get("answer")
        return {
            "step": m["step"],
            "agent": m["agent"],
            "topic": m["topic"],
            "turn": m["turn"],
            "n_listeners": len(m.get("to", [])),
            "stance": said,
            "stance_status": "absent" if stance is None else stance.get("status"),
            "private_before": before,
            "private_after": after,
            "public_private_mismatch": (None if said is None or before is None else said != before),
            "impersonation": bool(hits),
            "impersonation_hits": ",".join(hits) if hits else None,
            "judge": None if judge is None else judge.get("verdict"),
        }


class PersonalityTracker(BuiltinTracker):
    """Big Five scores per BFI administration and their distance to the persona (§4).

    One row per (administration, trait): the seeded item and option orders as shown
    (comma-separated item numbers and Likert values), the trait score from
    :func:`simworld.measures.score_bfi` (reverse-keyed items), the number of items answered
    (0 when the call failed: the score is then null), the persona's assigned level and
    ``|score - assigned|`` from :func:`simworld.measures.trait_distance`.
    """

    name = "personality"
    reads = ("bfi",)
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("agent", pa.string()),
            ("inventory", pa.string()),
            ("administration_seed", pa.int64()),
            ("item_order", pa.string()),
            ("option_order", pa.string()),
            ("trait", pa.string()),
            ("score", pa.float64()),
            ("answered", pa.int64()),
            ("assigned", pa.float64()),
            ("distance", pa.float64()),
        ]
    )

    def reset(self) -> None:
        """Forget every administration."""
        super().reset()
        self._done: list[Row] = []

    def refresh(self) -> list[Row]:
        """Rows in administration order, traits in the Big Five order."""
        rows: list[Row] = []
        for e in self.cursor.new(self.store.bfi):
            responses = {int(k): v for k, v in e["responses"].items()}
            scores = score_bfi(responses, inventory=e["inventory"])
            agent = self.context.agents.get(e["agent"])
            levels = {} if agent is None else agent.big_five
            distance = trait_distance(scores.scores, levels)
            for trait, score in scores.scores.items():
                rows.append(
                    {
                        "step": e["step"],
                        "agent": e["agent"],
                        "inventory": e["inventory"],
                        "administration_seed": e["seed"],
                        "item_order": ",".join(map(str, e["item_order"])),
                        "option_order": ",".join(map(str, e["option_order"])),
                        "trait": trait,
                        "score": score,
                        "answered": scores.answered[trait],
                        "assigned": levels.get(trait),
                        "distance": distance.get(trait),
                    }
                )
        if rows:
            self._done = self._done + self.tidier.rows(rows)
        return self._done


class MemoryTracker(BuiltinTracker):
    """How many memory events (forgetting and reflections) each agent had per step."""

    name = "memory"
    reads = ("memory",)
    schema = pa.schema(
        [("step", pa.int64()), ("agent", pa.string()), ("type", pa.string()), ("count", pa.int64())]
    )

    def reset(self) -> None:
        """Forget the counts."""
        super().reset()
        self._counts: Counter[tuple[Any, str, str]] = Counter()
        self._done: list[Row] = []

    def refresh(self) -> list[Row]:
        """Rows sorted by step, agent, type."""
        new = self.cursor.new(self.store.memory)
        if new:
            self._counts.update((e.get("step"), str(e["agent"]), str(e["type"])) for e in new)
            ranked = sorted(self._counts.items(), key=lambda kv: (kv[0][0] or 0, *kv[0][1:]))
            self._done = self.tidier.rows(
                {"step": s, "agent": a, "type": t, "count": n} for (s, a, t), n in ranked
            )
        return self._done


__all__ = [
    "InconstancyTracker",
    "MemoryTracker",
    "PersonalityTracker",
    "StatementTracker",
]
