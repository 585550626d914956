"""An interaction protocol of your own: bounded confidence (Hegselmann-Krause style).

At each step every agent posts only to the neighbours whose last stated view (their latest
private answer on the step's topic) is within EPSILON scale points of its own; an agent
with no such neighbour stays silent. The scenario selects the class by file:
``protocol.mode: path/to/new_protocol.py:BoundedConfidence``.

    .venv/bin/python examples/new_protocol.py [OUT_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import simworld as sw
from simworld.config.scenario import Topic
from simworld.engine.protocols import Protocol, Stage, Turn

HERE = Path(__file__).resolve()
SCENARIO = HERE.parents[1] / "scenarios" / "opinion_exchange.yaml"
EPSILON = 1.0
"""Largest distance (in scale points) between views that still listen to each other."""


class BoundedConfidence(Protocol):
    """Agents talk only to neighbours whose last stated view is within ``EPSILON``."""

    name = "bounded_confidence"  # written as the messages' ``mode``
    logs_conversations = False  # one-turn posts, as broadcast

    def plan(self, model: Stage, step: int, topic: Topic) -> list[list[Turn]]:
        """One post per agent that has a like-minded neighbour, in node order."""
        views = model.latest_answers(topic.id, before=step)
        turns = []
        for agent in model.active_agents():
            close = [n for n in agent.neighbours() if n.active and near(views, agent, n, topic)]
            if close:
                turns.append([Turn(agent, "post", close)])
        return turns


def near(
    views: dict[str, str | None], a: sw.PersonaAgent, b: sw.PersonaAgent, topic: Topic
) -> bool:
    """Whether the two agents' last stated views are within EPSILON (equal, if not ordinal)."""
    va, vb = views.get(a.key), views.get(b.key)
    if va is None or vb is None:
        return False
    return abs(float(va) - float(vb)) <= EPSILON if topic.ordinal else va == vb


def main(out_root: str = "outputs/examples") -> None:
    """Record a run under the bounded-confidence protocol and show who heard whom."""
    changes = {
        "llm.model": "fake/default",
        "protocol.steps": 2,
        "protocol.mode": f"{HERE}:BoundedConfidence",
    }
    result = sw.run_scenario(SCENARIO, overrides=changes, out_root=out_root)
    print(f"run {result.run_dir}: {result.status}")
    # every message's ``to`` as the list of its listeners (the file may write "all the
    # speaker's neighbours" compactly)
    events = pd.DataFrame(sw.read_transcript(result.run_dir))
    messages = events[events.type == "message"]
    audience = messages.assign(listeners=messages["to"].map(len))
    print(
        audience.groupby("step").agg(posts=("agent", "size"), mean_listeners=("listeners", "mean"))
    )
    print("modes:", sorted(messages["mode"].unique()))
    print("replay identical:", sw.verify_replay(result.run_dir).identical)


if __name__ == "__main__":
    main(*sys.argv[1:])
