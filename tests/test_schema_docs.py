"""`simworld schema`: every scenario field has a description; examples are valid values."""

from __future__ import annotations

import json

import jsonschema
import pytest

from simworld.cli import main
from simworld.config.scenario import Scenario, scenario_json_schema
from simworld.config.schema_docs import field_paths, schema_docs


def _properties(schema: dict, node: dict, path: str = ""):
    """Every (path, property schema) as declared, following refs, unions and lists."""
    from simworld.config.schema_docs import _objects  # the walker the merge uses

    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        yield here, prop
        for sub_path, sub in _objects(schema, prop, here):
            yield from _properties(schema, sub, sub_path)


def test_every_field_has_a_documentation_entry_and_no_entry_is_stale():
    paths = field_paths(Scenario.model_json_schema())
    docs = schema_docs()
    assert len(paths) >= 138
    missing = [p for p in paths if not str(docs.get(p, {}).get("description", "")).strip()]
    assert not missing, (
        f"fields without a description in simworld/config/schema_docs.yaml: {missing}"
    )
    stale = sorted(set(docs) - set(paths))
    assert not stale, f"entries naming no field: {stale}"


def test_the_printed_schema_describes_every_field(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    described = dict(_properties(schema, schema))
    assert len(described) == len(field_paths(schema))
    undescribed = [p for p, prop in described.items() if not prop.get("description")]
    assert not undescribed, undescribed


def test_a_field_added_without_a_description_is_caught(monkeypatch):
    schema = Scenario.model_json_schema()
    schema["$defs"]["LLMConfig"]["properties"]["new_knob"] = {"type": "integer"}
    assert "llm.new_knob" in field_paths(schema)
    assert "llm.new_knob" not in schema_docs()


@pytest.mark.parametrize("path", [p for p, e in schema_docs().items() if "examples" in e])
def test_examples_are_valid_values(path):
    schema = scenario_json_schema()
    prop = dict(_properties(schema, schema))[path]
    validator = jsonschema.Draft202012Validator({**prop, "$defs": schema["$defs"]})
    for example in prop["examples"]:
        validator.validate(example)
