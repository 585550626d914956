"""Malformed scenario, persona and edge-list files: one clear line, exit code 2, nothing written.

Every case starts from a small valid scenario and persona library written to ``tmp_path``,
breaks one thing, runs ``simworld run`` through :func:`simworld.cli.main` and checks that
stderr is exactly one line naming the file at fault and the field path, that the exit code
is 2, and that nothing was written: no run directory and no cache file.
"""

from __future__ import annotations

import copy
import gc
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from simworld.cli import main

SCENARIO_FILE = "scenario.yaml"
LIBRARY_FILE = "panel.yaml"
EDGES_FILE = "edges.txt"
RUN_DIR = "run"
CACHE_FILE = "c.sqlite"

Mutator = Callable[[dict[str, Any]], None]


def _persona(pid: str, nationality: str, remote_work: int, city: str) -> dict[str, Any]:
    return {
        "id": pid,
        "name": pid.title(),
        "age": 40,
        "gender": "woman",
        "nationality": nationality,
        "occupation": "teacher",
        "education": "bachelor's degree",
        "big_five": {
            "openness": 3.0,
            "conscientiousness": 3.5,
            "extraversion": 2.5,
            "agreeableness": 4.0,
            "neuroticism": 2.0,
        },
        "opinions": {"remote_work": remote_work, "city_priority": city},
    }


VALID_LIBRARY: dict[str, Any] = {
    "name": "tiny_panel",
    "description": "Four personas for tests.",
    "personas": [
        _persona("ana", "Spain", 2, "A"),
        _persona("ben", "Spain", 4, "B"),
        _persona("chen", "China", 3, "A"),
        _persona("dee", "China", 5, "B"),
    ],
}

VALID_SCENARIO: dict[str, Any] = {
    "name": "tiny",
    "description": "A valid scenario that each case breaks in one place.",
    "seed": 3,
    "population": {"library": LIBRARY_FILE, "size": 4},
    "network": {"generator": "watts_strogatz", "k": 2, "p": 0.1},
    "topics": [
        {
            "id": "remote_work",
            "statement": "Companies should allow remote work.",
            "scale": {
                "type": "likert",
                "labels": ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"],
            },
        },
        {
            "id": "city_priority",
            "statement": "The city should spend first on",
            "scale": {"type": "choice", "options": {"A": "transit", "B": "housing"}},
        },
    ],
    "protocol": {"steps": 1},
    "llm": {"model": "fake/default", "concurrency": 4},
}

_DELETE = object()


def _set(dotted: str, value: Any = _DELETE) -> Mutator:
    """A mutator setting (or, without ``value``, deleting) ``a.b.0.c`` in a nested document."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is _DELETE:
            del node[key]
        else:
            node[key] = value

    return mutate


@dataclass(frozen=True)
class Case:
    """One bad input and the error it must produce.

    Attributes:
        id: Test id.
        file: Name (inside ``tmp_path``) of the file the error must name.
        field: Field path the error must name right after the file ("" when the whole
            file is at fault).
        scenario: Changes to the valid scenario.
        library: Changes to the valid persona library.
        raw_scenario: Scenario file text to write instead of the dumped scenario.
        raw_library: Library file text to write instead of the dumped library.
        files: Extra files to write (name -> text).
        args: Extra command-line arguments.
        write_scenario: Whether to write the scenario file at all.
        out_exists: Create the ``--out`` directory before the run.
        mentions: Further text the message must contain.
    """

    id: str
    file: str
    field: str
    scenario: tuple[Mutator, ...] = ()
    library: tuple[Mutator, ...] = ()
    raw_scenario: str | None = None
    raw_library: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    write_scenario: bool = True
    out_exists: bool = False
    mentions: tuple[str, ...] = ()


EDGE_LIST_NETWORK = {"generator": "edge_list", "path": EDGES_FILE}
S, L = SCENARIO_FILE, LIBRARY_FILE

CASES: list[Case] = [
    # -- types, unknown and missing fields ---------------------------------------------------
    Case("steps-wrong-type", S, "protocol.steps", (_set("protocol.steps", "ten"),)),
    Case("temperature-wrong-type", S, "llm.temperature", (_set("llm.temperature", "hot"),)),
    Case("unknown-top-level-field", S, "colour", (_set("colour", "red"),)),
    Case("unknown-nested-field", S, "protocol.speed", (_set("protocol.speed", 3),)),
    Case(
        "unknown-network-field",
        S,
        "network.k",
        (_set("network", {"generator": "complete", "k": 3}),),
        mentions=("unknown field",),
    ),
    Case(
        "missing-required-field",
        S,
        "protocol.steps",
        (_set("protocol.steps"),),
        mentions=("missing",),
    ),
    Case("missing-scenario-name", S, "name", (_set("name"),), mentions=("missing",)),
    Case("scenario-name-not-slug", S, "name", (_set("name", "My Scenario"),)),
    Case("topics-not-a-list", S, "topics", (_set("topics", {"remote_work": 1}),)),
    Case("no-topics", S, "topics", (_set("topics", []),)),
    # -- files --------------------------------------------------------------------------------
    Case("missing-scenario-file", S, "", write_scenario=False, mentions=("not found",)),
    Case(
        "missing-library-file",
        S,
        "population.library",
        (_set("population.library", "no_such_panel.yaml"),),
        mentions=("no_such_panel.yaml", "not found"),
    ),
    Case(
        "scenario-not-yaml",
        S,
        "line 2",
        raw_scenario="name: tiny\n  seed: bad: indent\n",
        mentions=("not valid YAML",),
    ),
    Case("scenario-is-a-list", S, "", raw_scenario="- name: tiny\n- seed: 3\n"),
    Case("scenario-is-empty", S, "", raw_scenario="", mentions=("empty",)),
    Case(
        "library-not-yaml",
        L,
        "line 2",
        raw_library="name: tiny_panel\n  personas: bad: indent\n",
        mentions=("not valid YAML",),
    ),
    Case("library-is-a-list", L, "", raw_library="- id: ana\n"),
    Case("library-no-personas", L, "personas", library=(_set("personas", []),)),
    # -- population ---------------------------------------------------------------------------
    Case("empty-population", S, "population.size", (_set("population.size", 0),)),
    Case(
        "population-larger-than-library",
        S,
        "population.size",
        (_set("population.size", 9),),
        mentions=("replace",),
    ),
    Case(
        "both-library-and-distributions",
        S,
        "population",
        (_set("population.distributions", {"nationality": {"Spain": 1.0}}),),
    ),
    Case("neither-library-nor-distributions", S, "population", (_set("population.library"),)),
    Case(
        "distributions-age-bounds-reversed",
        S,
        "population.distributions.age_min",
        (
            _set(
                "population",
                {
                    "size": 4,
                    "distributions": {"nationality": {"Spain": 1.0}, "age_min": 60, "age_max": 20},
                },
            ),
        ),
    ),
    Case(
        "distributions-opinion-off-scale",
        S,
        "population.distributions.opinions.remote_work",
        (
            _set(
                "population",
                {
                    "size": 4,
                    "distributions": {
                        "nationality": {"Spain": 1.0},
                        "opinions": {"remote_work": {"9": 1.0}},
                    },
                },
            ),
        ),
    ),
    # -- network ------------------------------------------------------------------------------
    Case("watts-strogatz-k-too-large", S, "network.k", (_set("network.k", 4),)),
    Case(
        "barabasi-albert-m-too-large",
        S,
        "network.m",
        (_set("network", {"generator": "barabasi_albert", "m": 4}),),
    ),
    Case("p-above-one", S, "network.p", (_set("network.p", 1.5),)),
    Case(
        "p-below-zero",
        S,
        "network.p",
        (_set("network", {"generator": "erdos_renyi", "p": -0.1}),),
    ),
    Case(
        "unknown-generator",
        S,
        "network.generator",
        (_set("network", {"generator": "hypercube"}),),
        mentions=("hypercube",),
    ),
    Case("missing-generator", S, "network.generator", (_set("network.generator"),)),
    Case(
        "sbm-sizes-do-not-sum-to-n",
        S,
        "network.sizes",
        (
            _set(
                "network",
                {"generator": "stochastic_block", "p_in": 0.9, "p_out": 0.1, "sizes": [2, 3]},
            ),
        ),
    ),
    Case(
        "sbm-both-group-by-and-sizes",
        S,
        "network",
        (
            _set(
                "network",
                {
                    "generator": "stochastic_block",
                    "p_in": 0.9,
                    "p_out": 0.1,
                    "sizes": [2, 2],
                    "group_by": "nationality",
                },
            ),
        ),
    ),
    Case(
        "edge-list-missing",
        S,
        "network.path",
        (_set("network", EDGE_LIST_NETWORK),),
        mentions=(EDGES_FILE, "not found"),
    ),
    Case(
        "edge-list-unknown-node",
        EDGES_FILE,
        "line 2",
        (_set("network", EDGE_LIST_NETWORK),),
        files={EDGES_FILE: "# a comment\nana zed\n"},
        mentions=("zed",),
    ),
    Case(
        "edge-list-index-out-of-range",
        EDGES_FILE,
        "line 1",
        (_set("network", EDGE_LIST_NETWORK),),
        files={EDGES_FILE: "0 4\n"},
    ),
    Case(
        "edge-list-three-columns",
        EDGES_FILE,
        "line 1",
        (_set("network", EDGE_LIST_NETWORK),),
        files={EDGES_FILE: "ana ben chen\n"},
    ),
    # -- topics -------------------------------------------------------------------------------
    Case(
        "duplicate-topic-ids",
        S,
        "topics[1].id",
        (_set("topics.1.id", "remote_work"),),
        mentions=("duplicate",),
    ),
    Case(
        "likert-one-label", S, "topics[0].scale.labels", (_set("topics.0.scale.labels", ["Yes"]),)
    ),
    Case(
        "likert-repeated-label",
        S,
        "topics[0].scale.labels",
        (_set("topics.0.scale.labels", ["Agree", "agree"]),),
        mentions=("distinct",),
    ),
    Case(
        "choice-key-not-capital-letter",
        S,
        "topics[1].scale.options",
        (_set("topics.1.scale.options", {"a": "transit", "B": "housing"}),),
        mentions=("'a'",),
    ),
    Case(
        "unknown-scale-type",
        S,
        "topics[1].scale.type",
        (_set("topics.1.scale.type", "slider"),),
        mentions=("slider",),
    ),
    # -- personas -----------------------------------------------------------------------------
    Case(
        "persona-likert-opinion-off-scale",
        L,
        "personas[2].opinions.remote_work",
        library=(_set("personas.2.opinions.remote_work", 7),),
    ),
    Case(
        "persona-choice-opinion-off-scale",
        L,
        "personas[1].opinions.city_priority",
        library=(_set("personas.1.opinions.city_priority", "Z"),),
    ),
    Case(
        "persona-opinion-fractional",
        L,
        "personas[0].opinions.remote_work",
        library=(_set("personas.0.opinions.remote_work", 3.5),),
    ),
    Case(
        "persona-big-five-out-of-range",
        L,
        "personas[1].big_five.openness",
        library=(_set("personas.1.big_five.openness", 6.0),),
    ),
    Case(
        "duplicate-persona-id",
        L,
        "personas[3].id",
        library=(_set("personas.3.id", "ana"),),
        mentions=("duplicate",),
    ),
    Case(
        "persona-unknown-field",
        L,
        "personas[0].hobby",
        library=(_set("personas.0.hobby", "chess"),),
    ),
    # -- seed, protocol, llm, command line ----------------------------------------------------
    Case("negative-seed", S, "seed", (_set("seed", -1),)),
    Case("bad-cache-mode", S, "llm.cache", (_set("llm.cache", "sometimes"),)),
    Case(
        "model-of-no-known-provider",
        S,
        "llm.model",
        (_set("llm.model", "nosuchprovider/some-model"),),
        mentions=("'nosuchprovider/some-model'", "PROVIDER/MODEL"),
    ),
    Case(
        "cli-model-of-no-known-provider",
        S,
        "llm.model",
        args=("--model", "some-model-name"),
        mentions=("'some-model-name'",),
    ),
    Case(
        "probe-at-after-last-step",
        S,
        "protocol.probe_at",
        (_set("protocol.probe_at", [0, 5]),),
    ),
    # -- interventions, grouping, Asch trials, belief --------------------------------------------
    Case(
        "intervention-after-last-step",
        S,
        "interventions[0].step",
        (_set("interventions", [{"step": 2, "kind": "rewire", "p": 0.5}]),),
    ),
    Case(
        "intervention-unknown-kind",
        S,
        "interventions[0].kind",
        (_set("interventions", [{"step": 1, "kind": "quarantine"}]),),
    ),
    Case(
        "broadcast-unknown-topic",
        S,
        "interventions[0].topic",
        (_set("interventions", [{"step": 1, "kind": "broadcast", "topic": "x", "text": "Hi!"}]),),
    ),
    Case(
        "removal-unknown-agent",
        S,
        "interventions[0].agents",
        (_set("interventions", [{"step": 1, "kind": "remove", "agents": ["zed"]}]),),
        mentions=("zed",),
    ),
    Case(
        "removal-believing-without-belief",
        S,
        "interventions[0].select.among",
        (
            _set(
                "interventions",
                [{"step": 1, "kind": "remove", "select": {"count": 1, "among": "believing"}}],
            ),
        ),
    ),
    Case(
        "balanced-grouping-without-groups",
        S,
        "protocol.grouping",
        (_set("protocol.grouping", "balanced"),),
    ),
    Case("asch-without-settings", S, "protocol.asch", (_set("protocol.mode", "asch"),)),
    Case(
        "asch-topic-without-truth",
        S,
        "topics",
        (_set("protocol.mode", "asch"), _set("protocol.asch", {"peers": [1]})),
        mentions=("remote_work",),
    ),
    Case(
        "truth-off-the-scale",
        S,
        "topics[1].truth",
        (_set("topics.1.truth", "Z"),),
    ),
    Case(
        "belief-on-a-choice-topic",
        S,
        "trackers.belief.topic",
        (_set("trackers", {"belief": {"topic": "city_priority"}}),),
    ),
    Case("temperature-out-of-range", S, "llm.temperature", (_set("llm.temperature", 3.0),)),
    Case("cli-steps-zero", S, "protocol.steps", args=("--steps", "0")),
    Case("cli-negative-seed", S, "seed", args=("--seed", "-1")),
    Case("out-dir-exists", RUN_DIR, "", out_exists=True, mentions=("exists",)),
]


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage() -> Iterator[None]:
    """Collect garbage once, before this module's first test captures anything.

    Asyncio tasks left over by earlier runs (litellm's logging worker) warn on stderr when
    they are collected; that must not land in the stderr a case checks. Within this module
    only :func:`test_valid_base_runs` runs a simulation, and it collects after itself (a
    collection per case would cost a fraction of a second each).
    """
    gc.collect()
    yield


def _write_inputs(tmp_path: Path, case: Case) -> None:
    scenario = copy.deepcopy(VALID_SCENARIO)
    library = copy.deepcopy(VALID_LIBRARY)
    for mutate in case.scenario:
        mutate(scenario)
    for mutate in case.library:
        mutate(library)
    if case.write_scenario:
        text = case.raw_scenario if case.raw_scenario is not None else yaml.safe_dump(scenario)
        (tmp_path / SCENARIO_FILE).write_text(text, encoding="utf-8")
    text = case.raw_library if case.raw_library is not None else yaml.safe_dump(library)
    (tmp_path / LIBRARY_FILE).write_text(text, encoding="utf-8")
    for name, text in case.files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    if case.out_exists:
        (tmp_path / RUN_DIR).mkdir()
        (tmp_path / RUN_DIR / "keep.txt").write_text("earlier results\n", encoding="utf-8")


def _run(tmp_path: Path, *args: str) -> int:
    return main(
        [
            "run",
            str(tmp_path / SCENARIO_FILE),
            "--out",
            str(tmp_path / RUN_DIR),
            "--cache",
            str(tmp_path / CACHE_FILE),
            "--quiet",
            *args,
        ]
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_off_scale_persona_is_refused_whether_or_not_the_seed_draws_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library persona's opinion off a topic's scale is refused for every seed, not only
    for the seeds that happen to draw that persona into a population of one."""
    case = Case(
        "one-of-four",
        LIBRARY_FILE,
        "personas[3].opinions.remote_work",
        scenario=(_set("population.size", 1), _set("network", {"generator": "complete"})),
        library=(_set("personas.3.opinions.remote_work", 7),),
    )
    _write_inputs(tmp_path, case)
    for seed in range(8):
        assert _run(tmp_path, "--seed", str(seed)) == 2, seed
        err = capsys.readouterr().err
        assert f"{tmp_path / LIBRARY_FILE}: personas[3].opinions.remote_work: 7 is not" in err
        assert not (tmp_path / RUN_DIR).exists()


def test_an_edge_list_naming_persona_ids_of_a_sample_is_refused_for_every_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Which personas a sample of the library holds depends on the seed, so an edge list
    naming persona ids is refused for every seed (not only where the seed left one out);
    indices are valid for every seed, and ids are once the whole library is drawn."""
    sample = (_set("population.size", 2), _set("network", EDGE_LIST_NETWORK))
    case = Case("ids-of-a-sample", EDGES_FILE, "line 1", sample, files={EDGES_FILE: "ana ben\n"})
    _write_inputs(tmp_path, case)
    for seed in range(8):
        assert _run(tmp_path, "--seed", str(seed)) == 2, seed
        err = capsys.readouterr().err
        assert (
            f"{tmp_path / EDGES_FILE}: line 1: names 'ana', but population.size draws 2 of " in err
        )
        assert "name agents by index 0..1" in err
        assert not (tmp_path / RUN_DIR).exists()
    (tmp_path / EDGES_FILE).write_text("0 1\n", encoding="utf-8")
    assert _run(tmp_path, "--seed", "5") == 0
    shutil.rmtree(tmp_path / RUN_DIR)
    _write_inputs(tmp_path, Case("whole-library", S, "", (_set("network", EDGE_LIST_NETWORK),)))
    (tmp_path / EDGES_FILE).write_text("ana ben\n", encoding="utf-8")
    assert _run(tmp_path, "--seed", "5") == 0


def test_cases_are_distinct() -> None:
    """Every case has its own id, and there are plenty of them."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 20


def test_valid_base_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The unmodified inputs are valid, so each failure below is due to its one change."""
    _write_inputs(tmp_path, Case("valid", S, ""))
    assert _run(tmp_path) == 0
    assert "completed" in capsys.readouterr().out
    assert (tmp_path / RUN_DIR / "manifest.json").is_file()
    assert (tmp_path / CACHE_FILE).is_file()  # so its absence below means something
    gc.collect()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    """Exit code 2, one stderr line ``simworld: error: <file>: <field>: <problem>``, no files."""
    _write_inputs(tmp_path, case)
    before = _tree(tmp_path)

    code = _run(tmp_path, *case.args)

    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert captured.out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("simworld: error: "), err
    assert "Traceback" not in err
    where = str(tmp_path / case.file)
    expected = f"{where}: {case.field}: " if case.field else f"{where}: "
    assert expected in err, err
    message = err.split(expected, 1)[1].strip()
    assert message, err
    for text in case.mentions:
        assert text in err, err
    if not case.out_exists:
        assert not (tmp_path / RUN_DIR).exists()
    # Nothing at all was written: no run directory, no cache file, no stray temporary file,
    # and an existing --out directory is left untouched.
    assert _tree(tmp_path) == before
