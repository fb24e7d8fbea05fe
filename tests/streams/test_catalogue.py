"""The function catalogue against the reference product's own exports, and against bad params.

No database: the catalogue is pure data and functions.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streams.catalogue import (
    FUNCTIONS,
    FunctionSpec,
    catalogue_json,
    declared_outputs,
    params_problems,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared/fixtures/usage-engine-streams"
STREAM_FILES = sorted(FIXTURES.glob("*.json"))
COLLECTOR_ID = "0b6e1c1e-6a4f-4f7e-9d65-0b1f5e1d2c3a"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _nodes() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.stem}:{node['id']}", node)
        for path in STREAM_FILES
        for node in _load(path)["nodes"]
    ]


def _fixture_node(node_type: str) -> dict[str, Any]:
    """A deep copy of the first fixture node of a type, to break without touching the files."""
    for _, node in _nodes():
        if node["type"] == node_type:
            return copy.deepcopy(node)
    raise LookupError(node_type)


NODES = _nodes()


def test_the_six_exports_are_there() -> None:
    # If the fixtures move, every parametrised test below would silently collect nothing.
    assert len(STREAM_FILES) == 6
    assert len(NODES) > 50


# --- The reference exports pass --------------------------------------------------------------


def test_every_node_type_used_in_the_exports_is_catalogued() -> None:
    used = {node["type"] for _, node in NODES}
    assert used - FUNCTIONS.keys() == set()
    # Those the brief names, so that a fixture change cannot shrink the check unnoticed.
    assert used >= {
        "readers/counter",
        "transforms/map",
        "transforms/xmap",
        "transforms/script",
        "transforms/validate",
        "transforms/deduplicate",
        "transforms/split",
        "transforms/date",
        "transforms/meter",
        "transforms/data_aggregate",
        "transforms/http",
        "writers/log",
        "writers/noop",
    }


@pytest.mark.parametrize(("where", "node"), NODES, ids=[where for where, _ in NODES])
def test_every_node_of_the_exports_has_acceptable_params(where: str, node: dict) -> None:
    assert params_problems(node["type"], node["params"]) == []


@pytest.mark.parametrize("path", STREAM_FILES, ids=[path.stem for path in STREAM_FILES])
def test_every_edge_output_is_declared_by_its_source(path: Path) -> None:
    stream = _load(path)
    by_id = {node["id"]: node for node in stream["nodes"]}
    for edge in stream["edges"]:
        outputs = declared_outputs(by_id[edge["from"]])
        if outputs is None:
            # Single output: the exports never name one.
            assert "output" not in edge, edge
        else:
            # Several outputs: every edge names one of its source's, by id.
            assert edge.get("output") in outputs, edge


def test_outputs_are_read_from_params_by_id() -> None:
    meter = _fixture_node("transforms/meter")
    fixed = meter["params"]["multiOutput"]["fixed"]
    assert declared_outputs(meter) == {fixed["reset"]["id"], fixed["threshold"]["id"]}

    dedupe = _fixture_node("transforms/deduplicate")
    assert declared_outputs(dedupe) == {dedupe["params"]["multiOutput"]["fixed"]["unique"]["id"]}

    split = _fixture_node("transforms/split")
    routes = split["params"]["multiOutput"]["configurable"]["outputs"]
    assert declared_outputs(split) == {route["id"] for route in routes}
    # The names are labels, not what an edge refers to.
    assert not declared_outputs(split) & {route["name"] for route in routes}

    assert declared_outputs(_fixture_node("transforms/script")) is None
    assert declared_outputs(_fixture_node("readers/counter")) is None
    assert declared_outputs(_fixture_node("writers/log")) is None


def test_a_fixed_output_the_catalogue_does_not_name_is_still_routable() -> None:
    # E.g. a duplicates channel on deduplicate: its id must be accepted on edges.
    dedupe = _fixture_node("transforms/deduplicate")
    dedupe["params"]["multiOutput"]["fixed"]["duplicate"] = {"id": "dup-id"}
    assert params_problems(dedupe["type"], dedupe["params"]) == []
    assert "dup-id" in declared_outputs(dedupe)  # type: ignore[operator]


@pytest.mark.parametrize(
    "params",
    [None, [], {}, {"multiOutput": "x"}, {"multiOutput": {"fixed": []}}],
)
def test_malformed_multi_output_declares_nothing_rather_than_failing(params: Any) -> None:
    assert declared_outputs({"type": "transforms/meter", "params": params}) == set()
    assert declared_outputs({"type": "transforms/split", "params": params}) == set()


def test_a_node_of_unknown_type_or_without_type_declares_no_outputs() -> None:
    assert declared_outputs({"type": "transforms/nonesuch", "params": {}}) is None
    assert declared_outputs({"params": {}}) is None


# --- Bad params are caught, with a path ------------------------------------------------------


def test_online_collection_needs_a_collector_id() -> None:
    assert params_problems("readers/online_collection", {"collectorId": COLLECTOR_ID}) == []
    assert params_problems("readers/online_collection", {}) == [
        "params: 'collectorId' is a required property"
    ]


@pytest.mark.parametrize("collector_id", ["not-a-uuid", 42, None, ""])
def test_online_collection_collector_id_must_be_a_uuid_string(collector_id: Any) -> None:
    problems = params_problems("readers/online_collection", {"collectorId": collector_id})
    assert len(problems) == 1
    assert problems[0].startswith("params.collectorId: ")


def test_online_collection_rejects_keys_tally_does_not_define() -> None:
    problems = params_problems(
        "readers/online_collection", {"collectorId": COLLECTOR_ID, "collector": "x"}
    )
    assert len(problems) == 1
    assert problems[0].startswith("params: Additional properties are not allowed")


def test_map_mappings_must_be_a_list() -> None:
    node = _fixture_node("transforms/map")
    node["params"]["mappings"] = {"customer": "customer"}
    assert params_problems(node["type"], node["params"]) == [
        "params.mappings: {'customer': 'customer'} is not of type 'array'"
    ]


def test_map_mapping_entries_are_single_string_pairs() -> None:
    node = _fixture_node("transforms/map")
    node["params"]["mappings"][0] = {"a": "b", "c": "d"}
    node["params"]["mappings"][2] = {"a": 3}
    problems = params_problems(node["type"], node["params"])
    assert [problem.split(":")[0] for problem in problems] == [
        "params.mappings[0]",
        "params.mappings[2].a",
    ]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda params: params.update(guidingRules={"name": "Printing"}), "params.guidingRules"),
        (lambda params: params.update(flushType=1), "params.flushType"),
        (lambda params: params.update(guidingRules=[]), "params.guidingRules"),
        (lambda params: params["guidingRules"][0].pop("matchCategory"), "params.guidingRules[0]"),
        (
            lambda params: params["guidingRules"][0].update(ignoreCondition="yes"),
            "params.guidingRules[0].ignoreCondition",
        ),
        (
            lambda params: params["guidingRules"][0].update(conditionRelation="xor"),
            "params.guidingRules[0].conditionRelation",
        ),
        (
            lambda params: params["multiOutput"]["fixed"].pop("threshold"),
            "params.multiOutput.fixed",
        ),
        (
            lambda params: params["multiOutput"]["fixed"]["reset"].update(id=7),
            "params.multiOutput.fixed.reset.id",
        ),
        (
            lambda params: params.update(suspenseManagement={"enabled": "true"}),
            "params.suspenseManagement.enabled",
        ),
    ],
)
def test_meter_params_of_the_wrong_shape_are_caught(change: Any, where: str) -> None:
    node = _fixture_node("transforms/meter")
    change(node["params"])
    problems = params_problems(node["type"], node["params"])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{where}: ")


def test_split_needs_its_routes() -> None:
    node = _fixture_node("transforms/split")
    node["params"]["multiOutput"] = {"configurable": {"outputs": []}}
    node["params"]["rules"][1].pop("output")
    problems = params_problems(node["type"], node["params"])
    assert [problem.split(": ")[0] for problem in problems] == [
        "params.multiOutput.configurable.outputs",
        "params.rules[1]",
    ]


def test_problems_come_sorted_by_path_with_indexes_in_numeric_order() -> None:
    mappings = [{"field": f"f{i}", "expression": "1"} for i in range(12)]
    mappings[10]["field"] = 1
    mappings[2]["field"] = 2
    params = {"keepFields": {"enabled": True}, "mappings": mappings}
    assert params_problems("transforms/xmap", params) == [
        "params.mappings[2].field: 2 is not of type 'string'",
        "params.mappings[10].field: 1 is not of type 'string'",
    ]


def test_keys_that_are_not_plain_names_are_quoted_in_the_path() -> None:
    params = {"uri": "https://example.test", "method": "GET", "qs": {"a.b": 1}}
    assert params_problems("transforms/http", params) == [
        """params.qs["a.b"]: 1 is not of type 'string'"""
    ]


@pytest.mark.parametrize("params", [None, [], "max", 3])
def test_params_that_are_not_an_object_are_reported_at_the_root(params: Any) -> None:
    problems = params_problems("readers/counter", params)
    assert len(problems) == 1
    assert problems[0].startswith("params: ")


def test_unknown_keys_are_tolerated_where_the_reference_product_may_add_them() -> None:
    node = _fixture_node("transforms/http")
    node["params"]["someFutureSetting"] = {"anything": True}
    assert params_problems(node["type"], node["params"]) == []


def test_an_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        params_problems("transforms/nonesuch", {})


# --- The catalogue itself --------------------------------------------------------------------


def test_the_catalogue_knows_the_functions_the_exports_do_not_use() -> None:
    assert FUNCTIONS["readers/online_collection"].kind == "reader"
    assert FUNCTIONS["transforms/script_aggregate"].kind == "transform"


@pytest.mark.parametrize("spec", FUNCTIONS.values(), ids=list(FUNCTIONS))
def test_every_spec_is_consistent(spec: FunctionSpec) -> None:
    assert spec.type == spec.type.strip() and spec.type.split("/")[0] in {
        "readers",
        "transforms",
        "writers",
    }
    assert spec.kind == spec.type.split("/")[0].removesuffix("s")
    assert spec.description and "\n" not in spec.description
    assert spec.inputs == (0 if spec.kind == "reader" else 1)
    assert (spec.outputs == "none") == (spec.kind == "writer")
    assert bool(spec.fixed_outputs) == (spec.outputs == "fixed")
    Draft202012Validator.check_schema(spec.params_schema)
    assert spec.params_schema["type"] == "object"
    assert spec.params_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_output_shapes() -> None:
    shapes = {spec.type: (spec.outputs, spec.fixed_outputs) for spec in FUNCTIONS.values()}
    assert shapes["transforms/meter"] == ("fixed", ("reset", "threshold"))
    assert shapes["transforms/deduplicate"] == ("fixed", ("unique",))
    assert shapes["transforms/split"] == ("configurable", ())
    assert shapes["writers/log"] == ("none", ())
    assert shapes["readers/counter"] == ("single", ())


def test_catalogue_json_is_serialisable_complete_and_sorted() -> None:
    answer = catalogue_json()
    assert json.loads(json.dumps(answer)) == answer
    types = [entry["type"] for entry in answer]
    assert types == sorted(types) == sorted(FUNCTIONS)
    for entry in answer:
        assert set(entry) == {
            "type",
            "kind",
            "description",
            "inputs",
            "outputs",
            "fixedOutputs",
            "paramsSchema",
        }
        assert entry["paramsSchema"] == FUNCTIONS[entry["type"]].params_schema
    meter = next(entry for entry in answer if entry["type"] == "transforms/meter")
    assert meter["fixedOutputs"] == ["reset", "threshold"]
