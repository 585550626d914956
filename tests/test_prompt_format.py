"""The prompt conventions the fake and local providers parse hold for the rendered templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import build_model

from simworld.llm.providers.prompt_format import OPTION_LINE, SPEAKER, TOPIC_LINE


def test_probe_and_speech_prompts_parse(make_scenario: Callable[..., Path]) -> None:
    model = build_model(make_scenario())
    try:
        agent = model.agent_at(0)
        topic = model.scenario.topics[0]
        probe, _ = agent.answer_request(topic, step=1)
        speech = agent.speech_request("post", topic, step=1)
        for request in (probe, speech):
            system, user = (m["content"] for m in request.messages)
            assert SPEAKER.match(system).group(1) == agent.name
            assert TOPIC_LINE.search(user).group(1) == topic.statement
            options = OPTION_LINE.findall(user)
            assert [v for v, _ in options] == [str(v) for v in topic.scale.values]
            assert [lab for _, lab in options] == [topic.scale.label(v) for v in topic.scale.values]
    finally:
        model.close()
