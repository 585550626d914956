"""Write the bad-input battery: scenario files that simworld must refuse with one line.

Run ``python tests/bad_inputs/make_bad_inputs.py`` to (re)write the files next to this
script and ``expected.json`` (file name -> text the error line must contain: the field, or
the line, at fault). ``tests/test_bad_inputs.py`` runs ``simworld run`` on every file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
LIKERT = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]
BASE: dict[str, Any] = {
    "name": "bad",
    "seed": 3,
    "population": {"library": "../../agents/global_panel.yaml", "size": 6},
    "network": {"generator": "watts_strogatz", "k": 2, "p": 0.2},
    "topics": [
        {
            "id": "remote_work",
            "statement": "Companies should let employees work from home.",
            "scale": {"type": "likert", "labels": LIKERT},
        },
        {
            "id": "city_priority",
            "statement": "What should the city fund first?",
            "scale": {
                "type": "choice",
                "options": {"A": "Transport", "B": "Housing", "C": "Safety", "D": "Parks"},
            },
        },
    ],
    "protocol": {"steps": 2, "mode": "broadcast"},
    "llm": {"model": "fake/default", "cache": "record"},
}
DISTRIBUTIONS = {"nationality": {"Japan": 1.0, "Brazil": 1.0}}


def setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted ``key`` (``topics[0].id`` indexes lists)."""

    def change(data: dict[str, Any]) -> None:
        new = copy.deepcopy(value)
        node: Any = data
        parts = key.replace("[", ".[").split(".")
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = new
        else:
            node[last] = new

    return change


def removing(key: str) -> Callable[[dict[str, Any]], None]:
    """A change that deletes the dotted ``key``."""

    def change(data: dict[str, Any]) -> None:
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        del node[last]

    return change


def several(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """All the changes, in order."""

    def change(data: dict[str, Any]) -> None:
        for c in changes:
            c(data)

    return change


DIST = setting("population", {"size": 6, "distributions": DISTRIBUTIONS})
# name -> (change, text the error line must contain)
SCHEMA_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "name_missing": (removing("name"), "name"),
    "name_not_slug": (setting("name", "Bad Name!"), "name"),
    "name_number": (setting("name", 12), "name"),
    "seed_negative": (setting("seed", -1), "seed"),
    "seed_bool": (setting("seed", True), "seed"),
    "seed_text": (setting("seed", "3"), "seed"),
    "seed_fraction": (setting("seed", 1.5), "seed"),
    "seed_huge": (setting("seed", 2**64), "seed"),
    "seed_list": (setting("seed", [1, 2]), "seed"),
    "population_missing": (removing("population"), "population"),
    "size_zero": (setting("population.size", 0), "population.size"),
    "size_bool": (setting("population.size", True), "population.size"),
    "size_text": (setting("population.size", "6"), "population.size"),
    "size_too_big": (setting("population.size", 100_001), "population.size"),
    "size_float": (setting("population.size", 6.5), "population.size"),
    "library_and_distributions": (
        setting("population.distributions", DISTRIBUTIONS),
        "population",
    ),
    "library_missing_file": (setting("population.library", "nowhere.yaml"), "population.library"),
    "library_number": (setting("population.library", 5), "population.library"),
    "library_too_small": (setting("population.size", 5000), "population.size"),
    "replace_text": (setting("population.replace", "yes"), "population.replace"),
    "replace_number": (setting("population.replace", 1), "population.replace"),
    "weights_nan": (
        several(DIST, setting("population.distributions.nationality.Japan", float("nan"))),
        "population.distributions.nationality.Japan",
    ),
    "weights_inf": (
        several(DIST, setting("population.distributions.gender", {"woman": float("inf")})),
        "population.distributions.gender.woman",
    ),
    "weights_negative": (
        several(DIST, setting("population.distributions.nationality.Japan", -1.0)),
        "population.distributions",
    ),
    "weights_zero_sum": (
        several(DIST, setting("population.distributions.nationality", {"Japan": 0.0})),
        "population.distributions",
    ),
    "weights_overflow": (
        several(DIST, setting("population.distributions.nationality", {"A": 1e308, "B": 1e308})),
        "population.distributions.nationality: weights must be finite",
    ),
    "distribution_value_with_tab": (
        several(DIST, setting("population.distributions.nationality", {"Fr\tance": 1.0})),
        "population.distributions.nationality: 'Fr\\tance' is not a value",
    ),
    "distribution_value_blank": (
        several(DIST, setting("population.distributions.gender", {"": 1.0})),
        "population.distributions.gender: '' is not a value",
    ),
    "distribution_opinion_unknown_topic": (
        several(DIST, setting("population.distributions.opinions", {"remote_wrok": {"1": 1.0}})),
        "population.distributions.opinions.remote_wrok: not a topic of the scenario",
    ),
    "distribution_opinion_off_scale_unweighted": (  # refused whatever the seed draws
        several(
            DIST,
            setting("population.distributions.opinions", {"remote_work": {"1": 1.0, "9": 0.0}}),
        ),
        "population.distributions.opinions.remote_work: 9 is not on the topic's scale",
    ),
    "distribution_opinion_unicode_digit": (
        several(DIST, setting("population.distributions.opinions", {"remote_work": {"²": 1.0}})),
        "population.distributions.opinions.remote_work: '²' is not on the topic's scale",
    ),
    "embedding_fake": (
        setting(
            "memory",
            {"store": "chroma", "embedding": {"provider": "litellm", "model": "fake/default"}},
        ),
        "memory.embedding.model: 'fake/default': simworld's fake and local providers serve",
    ),
    "embedding_unknown_provider": (
        setting(
            "memory",
            {"store": "chroma", "embedding": {"provider": "litellm", "model": "nosuchprovider/x"}},
        ),
        "memory.embedding.model: 'nosuchprovider/x': no provider is known",
    ),
    "ages_reversed": (
        several(
            DIST,
            setting("population.distributions.age_min", 60),
            setting("population.distributions.age_max", 30),
        ),
        "population.distributions.age_min",
    ),
    "big_five_sd_nan": (
        several(DIST, setting("population.distributions.big_five_sd", float("nan"))),
        "population.distributions.big_five_sd",
    ),
    "network_missing": (removing("network"), "network"),
    "generator_unknown": (setting("network", {"generator": "torus"}), "network"),
    "ws_k_too_big": (setting("network.k", 6), "network.k"),
    "ws_k_bool": (setting("network.k", True), "network.k"),
    "ws_p_above_one": (setting("network.p", 1.5), "network.p"),
    "ws_p_negative": (setting("network.p", -0.1), "network.p"),
    "ws_p_nan": (setting("network.p", float("nan")), "network.p"),
    "ws_p_text": (setting("network.p", "0.2"), "network.p"),
    "ws_extra_field": (setting("network.q", 1), "network.q"),
    "ba_m_zero": (setting("network", {"generator": "barabasi_albert", "m": 0}), "network.m"),
    "ba_m_too_big": (setting("network", {"generator": "barabasi_albert", "m": 6}), "network.m"),
    "er_p_missing": (setting("network", {"generator": "erdos_renyi"}), "network.p"),
    "sbm_sizes_mismatch": (
        setting(
            "network", {"generator": "stochastic_block", "p_in": 0.5, "p_out": 0.1, "sizes": [2, 2]}
        ),
        "network.sizes",
    ),
    "sbm_two_groupings": (
        setting(
            "network",
            {
                "generator": "stochastic_block",
                "p_in": 0.5,
                "p_out": 0.1,
                "sizes": [3, 3],
                "group_by": "gender",
            },
        ),
        "network",
    ),
    "edge_list_missing": (
        setting("network", {"generator": "edge_list", "path": "edges/nowhere.txt"}),
        "network.path",
    ),
    "edge_list_not_utf8": (
        setting("network", {"generator": "edge_list", "path": "edges/latin1.txt"}),
        "edges/latin1.txt: not UTF-8",
    ),
    "edge_list_binary": (
        setting("network", {"generator": "edge_list", "path": "edges/binary.txt"}),
        "edges/binary.txt: line 2",
    ),
    "edge_list_unknown_node": (
        setting("network", {"generator": "edge_list", "path": "edges/unknown_node.txt"}),
        "edges/unknown_node.txt: line 2",
    ),
    "edge_list_three_columns": (
        setting("network", {"generator": "edge_list", "path": "edges/three_columns.txt"}),
        "edges/three_columns.txt: line 1",
    ),
    "edge_list_no_edges": (
        setting("network", {"generator": "edge_list", "path": "edges/comments_only.txt"}),
        "network.path",
    ),
    "edge_list_unicode_digit": (
        setting("network", {"generator": "edge_list", "path": "edges/unicode_digit.txt"}),
        "edges/unicode_digit.txt: line 1: unknown node '１'",
    ),
    "topics_missing": (removing("topics"), "topics"),
    "topics_empty": (setting("topics", []), "topics"),
    "topic_id_bad": (setting("topics[0].id", "Remote Work"), "topics[0].id"),
    "topic_ids_duplicate": (setting("topics[1].id", "remote_work"), "topics[1].id"),
    "statement_short": (setting("topics[0].statement", "no"), "topics[0].statement"),
    "scale_unknown": (setting("topics[0].scale", {"type": "slider"}), "topics[0].scale"),
    "likert_one_label": (setting("topics[0].scale.labels", ["Only"]), "topics[0].scale.labels"),
    "likert_duplicate_labels": (
        setting("topics[0].scale.labels", ["Yes", "yes", "No"]),
        "topics[0].scale.labels",
    ),
    "likert_labels_differ_in_spacing": (
        setting("topics[0].scale.labels", ["Agree", "Agree ", "Disagree"]),
        "topics[0].scale.labels: must be distinct",
    ),
    "likert_label_blank": (
        setting("topics[0].scale.labels", ["Agree", "  ", "Disagree"]),
        "topics[0].scale.labels: ' ' is blank",
    ),
    "choice_options_duplicate": (
        setting("topics[1].scale.options", {"A": "Yes please", "B": "yes PLEASE"}),
        "topics[1].scale.options: must be distinct",
    ),
    "choice_option_blank": (
        setting("topics[1].scale.options", {"A": "", "B": "Housing"}),
        "topics[1].scale.options: '' is blank",
    ),
    "choice_lowercase_key": (
        setting("topics[1].scale.options", {"a": "One", "B": "Two"}),
        "topics[1].scale.options",
    ),
    "truth_off_scale": (setting("topics[0].truth", 9), "topics[0].truth"),
    "protocol_missing": (removing("protocol"), "protocol"),
    "steps_zero": (setting("protocol.steps", 0), "protocol.steps"),
    "steps_bool": (setting("protocol.steps", True), "protocol.steps"),
    "steps_too_many": (setting("protocol.steps", 100_001), "protocol.steps"),
    "steps_inf": (setting("protocol.steps", float("inf")), "protocol.steps"),
    "steps_text": (setting("protocol.steps", "two"), "protocol.steps"),
    "mode_unknown": (setting("protocol.mode", "telepathy"), "protocol.mode"),
    "group_size_one": (setting("protocol.group_size", 1), "protocol.group_size"),
    "rounds_zero": (setting("protocol.rounds", 0), "protocol.rounds"),
    "probe_at_late": (setting("protocol.probe_at", [0, 9]), "protocol.probe_at"),
    "probe_every_zero": (setting("protocol.probe_every", 0), "protocol.probe_every"),
    "instruction_list": (setting("protocol.instruction", ["a", "b"]), "protocol.instruction"),
    "balanced_without_group": (setting("protocol.grouping", "balanced"), "protocol.grouping"),
    "asch_without_config": (setting("protocol.mode", "asch"), "protocol.asch"),
    "probe_at_empty": (setting("protocol.probe_at", []), "protocol.probe_at"),
    "baseline_with_asch": (
        several(
            setting("topics", [BASE["topics"][0]]),
            setting("baseline", {"model": "degroot"}),
            setting("protocol.mode", "asch"),
            setting("protocol.asch", {"peers": [0, 3], "peer_answers": {"remote_work": 2}}),
        ),
        "baseline: baseline agents do not answer Asch trials",
    ),
    "remove_agent_twice": (
        setting(
            "interventions",
            [{"step": 2, "kind": "remove", "agents": ["aiko-tanaka", "aiko-tanaka"]}],
        ),
        "interventions[0].agents: 'aiko-tanaka' is listed twice",
    ),
    "memory_window_negative": (setting("protocol.memory_window", -1), "protocol.memory_window"),
    "model_empty": (setting("llm.model", ""), "llm.model"),
    "model_bad_option": (setting("llm.model", "fake/default?bogus=1"), "llm.model"),
    "model_bad_failure_kind": (setting("llm.model", "fake/default?failures=gremlins"), "llm.model"),
    "temperature_high": (setting("llm.temperature", 3), "llm.temperature"),
    "temperature_nan": (setting("llm.temperature", float("nan")), "llm.temperature"),
    "max_tokens_zero": (setting("llm.max_tokens", 0), "llm.max_tokens"),
    "max_tokens_bool": (setting("llm.max_tokens", False), "llm.max_tokens"),
    "concurrency_zero": (setting("llm.concurrency", 0), "llm.concurrency"),
    "cache_mode_unknown": (setting("llm.cache", "maybe"), "llm.cache"),
    "timeout_zero": (setting("llm.timeout_s", 0), "llm.timeout_s"),
    "retries_negative": (setting("llm.max_retries", -1), "llm.max_retries"),
    "budget_zero": (setting("llm.budget_usd", 0), "llm.budget_usd"),
    "price_inf": (
        setting("llm.price", {"input_per_million": float("inf"), "output_per_million": 1.0}),
        "llm.price.input_per_million",
    ),
    "price_negative": (
        setting("llm.price", {"input_per_million": -1.0, "output_per_million": 1.0}),
        "llm.price.input_per_million",
    ),
    "failure_rate_above_one": (setting("llm.max_failure_rate", 2), "llm.max_failure_rate"),
    "probe_logprobs_text": (setting("llm.probe_logprobs", "yes"), "llm.probe_logprobs"),
    "llm_unknown_field": (setting("llm.api_kee", "x"), "llm.api_kee"),
    "unknown_top_field": (setting("populaton", {"size": 3}), "populaton"),
    "intervention_late": (
        setting(
            "interventions",
            [{"kind": "broadcast", "step": 9, "topic": "remote_work", "text": "Hello all"}],
        ),
        "interventions[0].step",
    ),
    "intervention_unknown_kind": (
        setting("interventions", [{"kind": "earthquake", "step": 1}]),
        "interventions[0]",
    ),
    "memory_unknown_field": (setting("memory.forgetfulness", 3), "memory.forgetfulness"),
    "trackers_unknown_field": (setting("trackers.mood_ring", True), "trackers.mood_ring"),
    "key_in_description": (
        setting("description", "Use sk-" + "proj-" + "Q7zT2mX9bK4wR8vN1cY6pL3s from the vault"),
        "description",
    ),
    "infeasible_complete_graph": (
        several(
            setting("population", {"size": 100_000, "distributions": DISTRIBUTIONS}),
            setting("network", {"generator": "complete"}),
        ),
        "network",
    ),
    "infeasible_rounds": (
        several(
            setting("protocol.mode", "group"),
            setting("protocol.rounds", 1_000_000_000),
        ),
        "protocol.rounds",
    ),
}
BOMB = "".join(
    f"{name}: &{name} [{', '.join([prev] * 9)}]\n"
    for name, prev in zip("bcdefghij", ["*a"] + [f"*{c}" for c in "bcdefghi"], strict=True)
)
# name -> (file text or bytes, text the error line must contain)
RAW_CASES: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "empty"),
    "only_comment": ("# nothing here\n", "empty"),
    "top_level_list": ("- name: bad\n", "mapping"),
    "top_level_scalar": ("just words\n", "mapping"),
    "unclosed_bracket": ("name: [bad\n", "line"),
    "tab_indent": ("name: bad\nprotocol:\n\tsteps: 2\n", "line"),
    "bad_indent": ("name: bad\n  protocol: 1\n", "line"),
    "undefined_alias": ("name: *nowhere\n", "line 1"),
    "python_tag": ("name: !!python/object:os.system ls\n", "line 1"),
    "two_documents": ("name: a\n---\nname: b\n", "line"),
    "alias_bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB + "description: *j\n", "aliases"),
    "recursive_alias": ("name: &a [*a]\n", "refers to itself"),
    "deep_nesting": ("name: " + "[" * 1000 + "]" * 1000 + "\n", "nested"),
    "duplicate_top_key": (None, "protocol (line"),  # type: ignore[dict-item]
    "duplicate_nested_key": (None, "protocol.steps (line"),  # type: ignore[dict-item]
    "not_utf8": (b"name: caf\xe9\n", "UTF-8"),
    "binary": (bytes(range(256)) * 4, "UTF-8"),
    "nul_bytes": (b"name: bad\x00\n", "character 10"),
    "inf_in_yaml": (None, "llm.price.input_per_million (line"),  # type: ignore[dict-item]
    "nan_in_yaml": (None, "network.p (line"),  # type: ignore[dict-item]
    "off_unquoted": (None, "quote the text"),  # type: ignore[dict-item]
    "exponent_without_point": (None, "write 1.0e-1"),  # type: ignore[dict-item]
    "octal_seed": (None, "seed (line 2): YAML reads 010 as a number in base 8 (8)"),  # type: ignore[dict-item]
    "base_60_steps": (None, "protocol.steps (line"),  # type: ignore[dict-item]
}
EDGES: dict[str, bytes] = {
    "latin1.txt": "aiko-tanaka 1\n0 caf\xe9\n".encode("latin-1"),
    "binary.txt": b"0 1\n\x00\x01\x02\x03\n",
    "unknown_node.txt": b"0 1\n0 nobody-here\n",
    "three_columns.txt": b"0 1 2\n",
    "comments_only.txt": b"# no edges at all\n\n",
    "unicode_digit.txt": "１ 2\n".encode(),  # a fullwidth digit: not an index
}


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def main() -> None:
    """Write every case and ``expected.json``."""
    expected: dict[str, str] = {}
    for name, (change, field) in SCHEMA_CASES.items():
        data = copy.deepcopy(BASE)
        change(data)
        (HERE / f"{name}.yaml").write_text(_dump(data), encoding="utf-8")
        expected[f"{name}.yaml"] = field
    base = _dump(BASE)
    raw = dict(RAW_CASES)
    raw["duplicate_top_key"] = (base + "protocol:\n  steps: 5\n", raw["duplicate_top_key"][1])
    raw["duplicate_nested_key"] = (
        base.replace("  steps: 2\n", "  steps: 2\n  steps: 3\n"),
        raw["duplicate_nested_key"][1],
    )
    raw["inf_in_yaml"] = (
        base + "  price: {input_per_million: .inf, output_per_million: 1.0}\n",
        raw["inf_in_yaml"][1],
    )
    raw["nan_in_yaml"] = (base.replace("p: 0.2", "p: .nan"), raw["nan_in_yaml"][1])
    raw["off_unquoted"] = (base.replace("cache: record", "cache: off"), raw["off_unquoted"][1])
    raw["exponent_without_point"] = (
        base + "  temperature: 1e-1\n",
        raw["exponent_without_point"][1],
    )
    raw["octal_seed"] = (base.replace("seed: 3\n", "seed: 010\n"), raw["octal_seed"][1])
    raw["base_60_steps"] = (
        base.replace("  steps: 2\n", "  steps: 1:30\n"),
        raw["base_60_steps"][1],
    )
    for name, (content, field) in raw.items():
        path = HERE / f"{name}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        expected[f"{name}.yaml"] = field
    (HERE / "edges").mkdir(exist_ok=True)
    for name, content in EDGES.items():
        (HERE / "edges" / name).write_bytes(content)
    listed = HERE / "expected.json"
    if listed.is_file():  # cases written by hand (not made here) keep their entries
        for name, text in json.loads(listed.read_text(encoding="utf-8")).items():
            if name not in expected and (HERE / name).is_file():
                expected[name] = text
    listed.write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(expected)} bad scenario files in {HERE}")


if __name__ == "__main__":
    main()
