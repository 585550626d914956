"""Generate the misinformation scenarios: one base design, one file per intervention condition.

After Liu et al. 2024 (FPS, arXiv 2403.09498): agents with a memory stream (short-term
recall, long-term reflection) post about a false local rumour once a day; a private probe
after every day reads whether they believe it (``trackers.belief``: susceptible, believing,
recovered). The conditions differ only in their scheduled ``interventions``.

Usage (from the repository root)::

    python scenarios/misinformation/build.py            # rewrite the four files in place
    python scenarios/misinformation/build.py --out /tmp/misinfo
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CLAIM = "water_cover_up"
RUMOUR_DAY = 1
INTERVENTION_DAY = 3
LIKERT = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]

RUMOUR = {
    "step": RUMOUR_DAY,
    "kind": "broadcast",
    "topic": CLAIM,
    "source": "A viral post shared in the town's online groups",
    "text": (
        "URGENT: a friend who works at the water plant says the tap water was contaminated "
        "with industrial chemicals last week and the council is hiding it. Kids are already "
        "getting sick. Share before they delete this!"
    ),
}
CORRECTION = {
    "kind": "broadcast",
    "topic": CLAIM,
    "source": "Town council and the regional health authority (official statement)",
    "text": (
        "Fact check: the viral post about contaminated tap water is false. Independent "
        "laboratory tests of the water supply, published in full on the council website, "
        "found no contamination, and no rise in illness has been reported by local doctors."
    ),
}

CONDITIONS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "no_intervention": ("no intervention", []),
    "correction": (
        f"an official correction broadcast to everyone on days {INTERVENTION_DAY} and "
        f"{INTERVENTION_DAY + 2}",
        [
            {"step": INTERVENTION_DAY, **CORRECTION},
            {"step": INTERVENTION_DAY + 2, **CORRECTION},
        ],
    ),
    "removal": (
        f"the three best-connected believers removed from the network on day {INTERVENTION_DAY}",
        [
            {
                "step": INTERVENTION_DAY,
                "kind": "remove",
                "select": {"count": 3, "by": "degree", "among": "believing"},
            }
        ],
    ),
    "rewire": (
        f"30% of the links rewired at random on day {INTERVENTION_DAY}",
        [{"step": INTERVENTION_DAY, "kind": "rewire", "p": 0.3}],
    ),
}

BASE: dict[str, Any] = {
    "seed": 2403,
    "population": {
        "size": 20,
        "distributions": {
            "nationality": {"United States": 1},
            "occupation": {
                "teacher": 1,
                "nurse": 1,
                "bus driver": 1,
                "shop owner": 1,
                "retired": 1,
                "student": 1,
                "plumber": 1,
                "accountant": 1,
            },
            "education": {"secondary school": 2, "bachelor's degree": 1, "master's degree": 1},
            "age_min": 18,
            "age_max": 80,
            "opinions": {CLAIM: {"1": 3, "2": 5, "3": 6, "4": 3, "5": 1}},
        },
    },
    "network": {"generator": "barabasi_albert", "m": 2},
    "topics": [
        {
            "id": CLAIM,
            "statement": (
                "The town's tap water was contaminated with industrial chemicals last week "
                "and the council is covering it up."
            ),
            "scale": {"type": "likert", "labels": LIKERT},
            "truth": 1,
        }
    ],
    "protocol": {"steps": 6, "mode": "broadcast", "probe_every": 1, "memory_window": 6},
    "memory": {
        "store": "chroma",
        "retrieval": {"k": 6},
        # 40 latest memories in the question prompt, not the paper's 100: a hub's 100 posts
        # overflow the embedded model's 4,096-token context by day 6
        "reflection": {
            "enabled": True,
            "threshold": 40.0,
            "recent": 40,
            "questions": 1,
            "insights": 2,
        },
    },
    "llm": {"temperature": 0.7, "max_tokens": 80, "concurrency": 8, "timeout_s": 300},
    "trackers": {"stance": False, "belief": {"topic": CLAIM, "believe_at": 4}},
}


def build(condition: str) -> dict[str, Any]:
    """The scenario mapping of one condition."""
    label, interventions = CONDITIONS[condition]
    scenario = {
        "name": f"misinformation_{condition}",
        "description": (
            "Misinformation spread with interventions (after Liu et al. 2024, FPS): 20 "
            "townspeople on a scale-free network (Barabasi-Albert, m=2) with a memory stream "
            "and reflection post once a day for six days about a false rumour that reaches "
            f"everyone on day {RUMOUR_DAY}; a private probe after every day gives belief states "
            f"(trackers/belief.parquet). Condition: {label}. Generated by "
            "scenarios/misinformation/build.py; do not edit by hand."
        ),
        **copy.deepcopy(BASE),
        "interventions": [copy.deepcopy(RUMOUR), *copy.deepcopy(interventions)],
    }
    return scenario


def main() -> None:
    """Write one scenario file per condition."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for condition in CONDITIONS:
        header = (
            f"# Generated by scenarios/misinformation/build.py ({condition}); do not edit by "
            "hand.\n"
        )
        body = yaml.safe_dump(build(condition), sort_keys=False, allow_unicode=True, width=100)
        (args.out / f"{condition}.yaml").write_text(header + body, encoding="utf-8")
        print(args.out / f"{condition}.yaml")


if __name__ == "__main__":
    main()
