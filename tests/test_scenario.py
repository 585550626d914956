"""Scenario files: schema, loading, overrides and the error locations reported for them."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from simworld.cli import main
from simworld.config.scenario import (
    DEFAULT_MODEL,
    ChoiceScale,
    EdgeListNetwork,
    LikertScale,
    ProtocolConfig,
    Scenario,
    WattsStrogatzNetwork,
    load_scenario,
    scenario_json_schema,
    set_dotted,
)
from simworld.errors import ConfigError, config_error_from_validation, format_loc

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "scenarios" / "opinion_exchange.yaml"
PANEL = ROOT / "agents" / "global_panel.yaml"
SCENARIO_FIELDS = {
    "name",
    "description",
    "seed",
    "population",
    "network",
    "topics",
    "protocol",
    "llm",
}


def _shipped_data() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(SHIPPED.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def printed_schema() -> dict[str, Any]:
    """The schema as ``simworld schema`` prints it."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["schema"]) == 0
    return json.loads(buf.getvalue())


# -- JSON Schema --------------------------------------------------------------------------------


def test_schema_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``simworld schema`` prints one JSON document and nothing on stderr."""
    assert main(["schema"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    schema = json.loads(out.out)
    assert schema == scenario_json_schema()
    assert set(schema["properties"]) >= SCENARIO_FIELDS
    assert set(schema["properties"]) == set(Scenario.model_fields)
    assert {"name", "population", "network", "topics", "protocol"} <= set(schema["required"])
    assert not {"description", "seed", "llm"} & set(schema["required"])


def test_schema_is_valid_draft_2020_12(printed_schema: dict[str, Any]) -> None:
    """The printed schema is itself a valid JSON Schema."""
    assert printed_schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(printed_schema)


def test_schema_accepts_shipped_scenario(printed_schema: dict[str, Any]) -> None:
    """Editors using the schema agree the shipped scenario is valid."""
    jsonschema.Draft202012Validator(printed_schema).validate(_shipped_data())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("colour", "red"),
        ("protocol.steps", "ten"),
        ("network", {"generator": "hypercube"}),
        ("network", {"generator": "watts_strogatz", "k": 4}),
        ("llm.cache", "sometimes"),
        ("llm.temperature", 3.0),
        ("seed", -1),
        ("name", "Not A Slug"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(
    printed_schema: dict[str, Any], path: str, value: Any
) -> None:
    """The schema is not a blank cheque: mistakes the loader refuses, it refuses too."""
    data = _shipped_data()
    set_dotted(data, path, value)
    with pytest.raises(ValidationError):
        Scenario.model_validate(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(printed_schema).validate(data)


# -- loading ------------------------------------------------------------------------------------


def test_load_shipped_scenario() -> None:
    """The shipped scenario loads, with its library path made absolute."""
    sc = load_scenario(SHIPPED)
    assert sc.name == "opinion_exchange"
    assert sc.seed == 7
    assert sc.population.size == 30
    assert Path(sc.population.library or "") == PANEL.resolve()
    assert isinstance(sc.network, WattsStrogatzNetwork)
    assert (sc.network.k, sc.network.p) == (4, 0.1)
    assert [t.id for t in sc.topics] == ["remote_work", "nuclear_power"]
    assert sc.topic("nuclear_power").ordinal
    assert sc.protocol.probe_steps() == list(range(4))
    assert sc.llm.model == DEFAULT_MODEL == "local/gemma3-270m"  # runs on the embedded model


def test_loading_does_not_depend_on_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths resolve from the scenario's folder, not the current directory."""
    monkeypatch.chdir(tmp_path)
    assert Path(load_scenario(SHIPPED).population.library or "") == PANEL.resolve()


def test_overrides_apply_before_validation() -> None:
    """Dotted overrides replace values, and are validated like the file."""
    sc = load_scenario(SHIPPED, {"protocol.steps": 2, "llm.model": "fake/other", "seed": 11})
    assert (sc.protocol.steps, sc.llm.model, sc.seed) == (2, "fake/other", 11)
    with pytest.raises(ConfigError) as info:
        load_scenario(SHIPPED, {"protocol.steps": 0})
    assert info.value.field == "protocol.steps"
    assert info.value.path == str(SHIPPED)


def test_set_dotted_creates_mappings() -> None:
    """Missing or non-mapping parents are replaced by mappings."""
    data: dict[str, Any] = {"llm": "oops", "a": {"keep": 1}}
    set_dotted(data, "llm.model", "fake/x")
    set_dotted(data, "a.b.c", 2)
    assert data == {"llm": {"model": "fake/x"}, "a": {"keep": 1, "b": {"c": 2}}}


def test_edge_list_path_resolves_from_scenario_folder(tmp_path: Path) -> None:
    """An edge list named relative to the scenario is found beside it."""
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "edges.txt").write_text("0 1\n", encoding="utf-8")
    data = _shipped_data()
    data["population"]["library"] = str(PANEL)
    data["network"] = {"generator": "edge_list", "path": "nets/edges.txt"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    sc = load_scenario(path)
    assert isinstance(sc.network, EdgeListNetwork)
    assert Path(sc.network.path) == (tmp_path / "nets" / "edges.txt").resolve()


def test_dumped_scenario_validates_again() -> None:
    """The manifest's copy of a scenario is itself a valid scenario."""
    sc = load_scenario(SHIPPED)
    again = Scenario.model_validate(json.loads(json.dumps(sc.model_dump(mode="json"))))
    assert again == sc


def test_defaults_are_filled() -> None:
    """Optional sections get their documented defaults."""
    data = _shipped_data()
    del data["llm"], data["seed"], data["description"]
    sc = Scenario.model_validate(data)
    assert sc.seed == 0
    assert sc.llm.model == "local/gemma3-270m"
    assert sc.llm.cache == "record"
    assert sc.description == ""


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("network.k", 30, "network.k"),
        ("network", {"generator": "barabasi_albert", "m": 31}, "network.m"),
        (
            "network",
            {"generator": "stochastic_block", "p_in": 0.5, "p_out": 0.1, "sizes": [10, 10]},
            "network.sizes",
        ),
    ],
)
def test_network_must_fit_population(path: str, value: Any, field: str) -> None:
    """Parameters that cannot work for ``population.size`` are caught when loading."""
    data = _shipped_data()
    set_dotted(data, path, value)
    with pytest.raises(ValidationError) as info:
        Scenario.model_validate(data)
    err = config_error_from_validation("s.yaml", info.value, data=data)
    assert err.field == field


# -- protocol and scales ------------------------------------------------------------------------


def test_probe_steps() -> None:
    """Probes every ``probe_every`` steps from 0, or exactly at ``probe_at``."""
    assert ProtocolConfig(steps=6, probe_every=2).probe_steps() == [0, 2, 4, 6]
    assert ProtocolConfig(steps=5, probe_every=2).probe_steps() == [0, 2, 4]
    assert ProtocolConfig(steps=6, probe_at=[6, 0, 3, 3]).probe_steps() == [0, 3, 6]


def test_scales() -> None:
    """Likert values are 1..K; choice values are the option letters."""
    likert = LikertScale(type="likert", labels=["No", "Maybe", "Yes"])
    assert likert.values == [1, 2, 3]
    assert likert.label(3) == "Yes"
    choice = ChoiceScale(type="choice", options={"A": "trains", "B": "parks"})
    assert choice.values == ["A", "B"]
    assert choice.label("B") == "parks"
    with pytest.raises(ValidationError):
        LikertScale(type="likert", labels=["Yes", "yes"])
    with pytest.raises(ValidationError):
        ChoiceScale(type="choice", options={"A": "one"})


# -- error locations ----------------------------------------------------------------------------


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Inner]
    table: dict[str, int | str] = {}


def _first_error(model: type[BaseModel], data: Any) -> ConfigError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return config_error_from_validation("f.yaml", info.value, data=data)


def test_format_loc() -> None:
    """Indices in brackets, names dotted, pydantic's internal parts dropped."""
    assert format_loc(("topics", 2, "scale", "labels")) == "topics[2].scale.labels"
    assert format_loc(("a", "function-after[check]", "b"), "doc") == "doc.a.b"
    assert format_loc((0, "x")) == "[0].x"


def test_union_member_names_are_left_out() -> None:
    """``network.watts_strogatz.p`` is reported as ``network.p``; ``x.int`` as ``x``."""
    data = _shipped_data()
    data["network"]["p"] = 2.0
    err = _first_error(Scenario, data)
    assert err.field == "network.p"
    err = _first_error(_Outer, {"items": [], "table": {"k": 1.5}})
    assert err.field == "table.k"


def test_error_kinds_read_well() -> None:
    """Unknown, missing and wrong-typed fields each get a short plain message."""
    err = _first_error(_Outer, {"items": [{"x": 1, "y": 2}]})
    assert (err.field, err.message) == ("items[0].y", "unknown field")
    err = _first_error(_Outer, {"items": [{}]})
    assert (err.field, err.message) == ("items[0].x", "required field is missing")
    err = _first_error(_Outer, {"items": [{"x": "ten"}]})
    assert err.field == "items[0].x"
    assert "'ten'" in err.message
    assert str(err) == f"f.yaml: items[0].x: {err.message}"


def test_unknown_discriminator_value_names_the_tag_field() -> None:
    """An unknown generator is reported at ``network.generator`` with the choices."""
    data = _shipped_data()
    data["network"] = {"generator": "hypercube"}
    err = _first_error(Scenario, data)
    assert err.field == "network.generator"
    assert "'hypercube'" in err.message and "watts_strogatz" in err.message


def test_config_error_is_one_line() -> None:
    """Whitespace in messages collapses so the error always fits on one line."""
    err = ConfigError("a.yaml", "x.y", "first line\n  second   line")
    assert str(err) == "a.yaml: x.y: first line second line"
    assert str(ConfigError("a.yaml", "", "file not found")) == "a.yaml: file not found"
