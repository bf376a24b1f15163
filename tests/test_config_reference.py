"""The configuration reference and the JSON Schema in docs/ are what the typed config models give; every field
says what it means; every shipped experiment validates against the schema."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from evomerge.run import config_reference as ref

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_page_is_generated_from_the_models():
    assert ref.REFERENCE.read_text() == ref.render_reference(), \
        "docs/config-reference.md is stale: run `python -m evomerge.run.config_reference`"


def test_the_json_schema_is_generated_from_the_models():
    assert ref.SCHEMA.read_text() == ref.render_schema(), \
        "docs/job-config.schema.json is stale: run `python -m evomerge.run.config_reference`"


def test_every_field_has_a_type_a_default_and_a_meaning():
    rows = [ln for ln in ref.render_reference().splitlines() if ln.startswith("| `")]
    assert len(rows) > 100
    missing = [r.split("|")[1].strip() for r in rows if not r.rstrip(" |").split("|")[-1].strip()]
    assert not missing, f"fields without a description: {missing}"


# staged jobs (a `stages:` list) are job configs only once each stage is merged with the shared part
JOBS = [p for p in sorted((ROOT / "experiments").glob("*.yaml")) if "stages" not in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_shipped_experiments_validate_against_the_schema(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(ref.SCHEMA.read_text()))


def test_the_schema_rejects_what_the_models_reject():
    schema = json.loads(ref.SCHEMA.read_text())
    good = yaml.safe_load((ROOT / "experiments" / "zoo_demo.yaml").read_text())
    for bad in ({**good, "budjet": {"evaluations": 4}},
                {**good, "fitness": {**good["fitness"], "batch_size": 0}},
                {**good, "fitness": {**good["fitness"], "kind": "nosuch"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
