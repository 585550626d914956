"""Asch-style conformity trials: each agent answers after ``p`` unanimous scripted peers.

After Zhu et al. 2024 (arXiv 2410.12428; docs/metrics.md §3): at step t every active agent answers
every topic after ``p = protocol.asch.peers_at(t)`` scripted participants have all given the
answer c. The trial's answer is structured (one of the topic's values) and never enters
memory, so trials are independent. The agent's own earlier answer is its private probe at
step 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simworld.config.scenario import Scenario
from simworld.engine.context import Society
from simworld.engine.record import StepRecord
from simworld.support.events import EventType
from simworld.support.hashing import canonical_json

PEER_NAME = "Participant {n}"
"""How the scripted peers are named in the prompt."""
PEER_ANSWER_STREAM = 0xA5C4
"""Mixed with the scenario seed for the generator of the peers' answers (apart from the
model's, so a branch that changes ``protocol.asch`` draws them again without disturbing it)."""


def draw_peer_answers(scenario: Scenario) -> dict[str, str]:
    """The peers' answer c per topic: the configured one, else a seeded wrong answer.

    Topics are visited in scenario order; one draw per topic without a configured answer,
    from ``numpy.random.default_rng([seed, PEER_ANSWER_STREAM])``. Empty unless the
    protocol is ``asch``.
    """
    asch = scenario.protocol.asch
    if asch is None:
        return {}
    rng = np.random.default_rng([scenario.seed, PEER_ANSWER_STREAM])
    answers: dict[str, str] = {}
    for topic in scenario.topics:
        if topic.id in asch.peer_answers:
            answers[topic.id] = str(asch.peer_answers[topic.id])
            continue
        wrong = [str(v) for v in topic.scale.values if str(v) != str(topic.truth)]
        answers[topic.id] = wrong[int(rng.integers(len(wrong)))]
    return answers


def run_trials(model: Society, record: StepRecord, step: int) -> None:
    """Run step ``step``'s trials concurrently and log them in agent, then topic, order.

    Each trial logs its call and an ``asch`` event: ``step, agent, topic, p, peer_answer,
    own_answer, answer, raw, ok, call, probs``.
    """
    asch = model.scenario.protocol.asch
    assert asch is not None
    p = asch.peers_at(step)
    jobs = []
    for agent in model.active_agents():
        for topic in model.scenario.topics:
            c = model.peer_answers[topic.id]
            label = topic.scale.label(int(c) if topic.ordinal else c)
            peers = [(PEER_NAME.format(n=n), f"{c} = {label}") for n in range(1, p + 1)]
            request, schema = agent.answer_request(topic, step=step, template="asch", heard=peers)
            jobs.append((agent, topic, request, schema))
    model.gateway.progress.expect(len(jobs))
    outcomes = model.gather(model.gateway.call(r, s) for _, _, r, s in jobs)
    own: dict[str, dict[str, Any]] = {
        t.id: model.latest_answers(t.id, before=1) for t in model.scenario.topics
    }
    for (agent, topic, _, _), outcome in zip(jobs, outcomes, strict=True):
        record.call(outcome)
        answer = outcome.parsed["answer"] if outcome.ok and outcome.parsed else None
        probs = outcome.extra.get("option_probs") if outcome.ok else None
        record.events.append(
            {
                "type": EventType.ASCH.value,
                "step": step,
                "agent": agent.key,
                "topic": topic.id,
                "p": p,
                "peer_answer": model.peer_answers[topic.id],
                "own_answer": own[topic.id].get(agent.key),
                "answer": None if answer is None else str(answer),
                "raw": outcome.text,
                "ok": outcome.ok,
                "call": outcome.key,
                "probs": None if probs is None else canonical_json(probs),
            }
        )


__all__ = ["PEER_NAME", "draw_peer_answers", "run_trials"]
