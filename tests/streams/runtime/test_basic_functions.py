"""The stateless functions (streams/runtime/functions/basic.py), run with the real params
of the reference product's exports over records like the ones those streams carry."""

from __future__ import annotations

import copy
import datetime
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.catalogue import FUNCTIONS
from streams.runtime.base import REGISTRY, Emit, Item, NodeContext
from streams.runtime.functions import basic

FIXTURES = Path(__file__).resolve().parents[4] / "shared/fixtures/usage-engine-streams"
PRINTING = "printing-as-a-service-with-metering.json"
CULTFLICKS = "cultflicks-video-streaming.json"
NOW = datetime.datetime(2024, 3, 15, 10, 30, tzinfo=datetime.UTC)


def fixture_node(export: str, name: str) -> dict:
    """A copy of a real node (the fixture file stays untouched)."""
    nodes = json.loads((FIXTURES / export).read_text())["nodes"]
    return copy.deepcopy(next(node for node in nodes if node["name"] == name))


def make_node(type_: str, params: dict) -> dict:
    return {"id": str(uuid.uuid4()), "type": type_, "name": type_, "params": params}


def context(node: dict) -> NodeContext:
    return NodeContext(
        operator_id=uuid.uuid4(),
        stream_id=uuid.uuid4(),
        version_id=uuid.uuid4(),
        node=node,
        now=NOW,
    )


def run(node: dict, *payloads: Any) -> Emit:
    """Every payload through one instance of the node's function, as the engine does."""
    emit = Emit()
    implementation = REGISTRY[node["type"]](context(node))
    implementation.process([Item(payload, origin) for origin, payload in enumerate(payloads)], emit)
    return emit


def single_output(emit: Emit) -> list[Any]:
    assert set(emit.outputs) <= {None}
    return [item.payload for item in emit.outputs.get(None, [])]


# A printer event as the "Simulate Usage" script makes it, and the same event invalid.
PRINTER_EVENT = {
    "eventId": "104_2024-03-15T10:29:31.120Z",
    "printerId": 104,
    "paper": "A3",
    "sided": "One",
    "color": "Yes",
    "sheets": 10,
    "inkLevel": 15,
    "status": "Normal",
    "timestamp": "2024-03-15T10:29:31.120Z",
}
INVALID_PRINTER_EVENT = {
    **PRINTER_EVENT,
    "printerId": "invalidShouldBeInt",
    "timestamp": "UNKNOWN",
    "paper": "XYZ123",
}
# What the meter's `reset` output carries for a printer's meter at the end of a period.
METER_RESET = {
    "meterId": "3f0c2a1e-0000-4000-8000-000000000001",
    "userId": "104",
    "value": 35,
    "periodStart": "2024-03-01T00:00:00.000Z",
    "periodEnd": "2024-04-01T00:00:00.000Z",
    "customFields": {
        "brand": "Brother",
        "type": "Laser",
        "model": "HL-L2350DW",
        "customer": "Guz Inc",
        "department": "Special Ops",
    },
}


def test_every_function_here_is_registered_under_a_catalogue_type():
    types = {
        "readers/counter",
        "writers/log",
        "writers/noop",
        "transforms/map",
        "transforms/xmap",
        "transforms/date",
        "transforms/validate",
        "transforms/split",
    }
    for type_ in types:
        assert type_ in FUNCTIONS
        assert REGISTRY[type_].__module__ == basic.__name__


# --- Counter, log, noop ----------------------------------------------------------------------


def test_counter_reads_records_numbered_from_one_to_max():
    node = fixture_node(PRINTING, "Count")
    reader = REGISTRY["readers/counter"](context(node))
    assert reader.read() == [{"value": number} for number in range(1, 11)]


def test_counter_refuses_a_max_below_one():
    reader = REGISTRY["readers/counter"](context(make_node("readers/counter", {"max": 0})))
    with pytest.raises(basic.ConfigurationError, match="max must be a whole number >= 1"):
        reader.read()


def test_log_writer_logs_each_record_and_emits_nothing():
    node = fixture_node(PRINTING, "To Billing")
    ctx = context(node)
    emit = Emit()
    REGISTRY["writers/log"](ctx).process([Item({"a": 1}, 0), Item({"b": 2}, 1)], emit)
    assert emit.outputs == {}
    assert emit.emitted == 0
    assert [(line.node_id, line.level, line.message, line.payload) for line in ctx.logs] == [
        (node["id"], "info", "record", {"a": 1}),
        (node["id"], "info", "record", {"b": 2}),
    ]


def test_noop_writer_drops_records():
    emit = run(make_node("writers/noop", {}), {"a": 1})
    assert emit.outputs == {}
    assert emit.failed == {}


# --- Map -------------------------------------------------------------------------------------


def test_normalize_fields_renames_printer_fields_for_the_meter():
    emit = run(fixture_node(PRINTING, "Normalize Fields"), PRINTER_EVENT)
    assert single_output(emit) == [
        {
            "eventId": PRINTER_EVENT["eventId"],
            "userId": 104,  # {"userId": "printerId"}: the key is the output
            "paper": "A3",
            "sided": "One",
            "color": "Yes",
            "value": 10,  # {"value": "sheets"}
            "inkLevel": 15,
            "status": "Normal",
            "timestamp": PRINTER_EVENT["timestamp"],
        }
    ]


def test_column_filter_maps_a_meter_reset_back_to_printer_fields():
    emit = run(fixture_node(PRINTING, "Column Filter 1"), METER_RESET)
    [record] = single_output(emit)
    assert record == {
        "printerId": "104",
        "sheets": 35,
        "periodStart": "2024-03-01T00:00:00.000Z",
        "periodEnd": "2024-04-01T00:00:00.000Z",
        "brand": "Brother",
        "type": "Laser",
        "model": "HL-L2350DW",
        # Not in the record at the top level, so only the customFields mappings wrote them.
        "customer": "Guz Inc",
        "department": "Special Ops",
    }
    # The output holds only mapped fields, in mapping order.
    assert list(record) == [
        "printerId",
        "sheets",
        "periodStart",
        "periodEnd",
        "brand",
        "type",
        "model",
        "customer",
        "department",
    ]


def test_a_later_mapping_wins_only_when_its_input_exists():
    node = fixture_node(PRINTING, "Column Filter 1")
    top_level_only = {**METER_RESET, "customer": "Top Inc", "customFields": {}}
    both = {**METER_RESET, "customer": "Top Inc"}
    [first, second] = single_output(run(node, top_level_only, both))
    assert first["customer"] == "Top Inc"
    assert second["customer"] == "Guz Inc"


def test_map_leaves_out_missing_input_fields_and_keeps_nulls():
    node = make_node("transforms/map", {"mappings": [{"a": "x"}, {"b": "y.z"}, {"c": "gone"}]})
    assert single_output(run(node, {"x": None, "y": {"z": 0}})) == [{"a": None, "b": 0}]
    assert single_output(run(node, {})) == [{}]


def test_map_writes_nested_output_fields_and_reads_list_items():
    node = make_node("transforms/map", {"mappings": [{"meter.first": "items.0.sku"}]})
    assert single_output(run(node, {"items": [{"sku": "a"}]})) == [{"meter": {"first": "a"}}]


def test_map_hands_on_copies_never_the_input_itself():
    node = make_node("transforms/map", {"mappings": [{"fields": "customFields"}]})
    record = copy.deepcopy(METER_RESET)
    [output] = single_output(run(node, record))
    output["fields"]["brand"] = "changed downstream"
    assert record == METER_RESET


def test_format_for_billing_over_an_aggregate_record():
    aggregate = {
        "user_id": 2,
        "month_timestamp": "2022-01",
        "carry_last_name": "Penny Lane",
        "carry_last_email": "penny@lane.com",
        "carry_last_birth_year": 1996,
        "carry_last_country": "Moldania",
        "carry_last_plan": "Premium",
        "count_title": 6,
        "sum_view_duration": 35850,
        "sum_full_duration": 40600,
        "sum_view_percent": 88,
        "user_category": "light_user",
        "user_churn_risk": False,
        "metrics_msg": "m",
        "nudge_msg": "n",
    }
    [record] = single_output(run(fixture_node(CULTFLICKS, "Format for billing"), aggregate))
    assert record["name"] == "Penny Lane"
    assert record["month"] == "2022-01"
    assert record["average_view_percent"] == 88
    assert record["user_churn_risk"] is False
    assert len(record) == 15


@pytest.mark.parametrize(
    ("mappings", "problem"),
    [
        ([{"a": "x", "b": "y"}], "mappings\\[0\\] must be one {output: input} pair"),
        ([{"a": 5}], "mappings\\[0\\] must map a field name to a path"),
        ([{"a": "x..y"}], "empty segment"),
    ],
)
def test_map_with_unusable_mappings_fails_every_record(mappings, problem):
    emit = run(make_node("transforms/map", {"mappings": mappings}), {"x": 1}, {"x": 2})
    assert set(emit.failed) == {0, 1}
    assert emit.failed[0].startswith("transforms/map: ")
    assert re.search(problem, emit.failed[0])


# --- Expression map --------------------------------------------------------------------------

VIEW = {
    "user_id": 1,
    "title": "Murder Tomatoes",
    "timestamp": "2022-01-01T23:59:59.000Z",
    "full_duration": 7300,
    "view_duration": 4250,
    "device_type": "laptop",
    "os_type": "windows",
    "name": "John Doe",
    "email": "john@doe.com",
    "birth_year": 1980,
    "country": "Syldavia",
    "plan": "Standard",
}


def test_calculate_view_percent_keeps_the_other_fields():
    record = copy.deepcopy(VIEW)
    [output] = single_output(run(fixture_node(CULTFLICKS, "Calculate view percent"), record))
    assert output == {**VIEW, "view_percent": 58}
    assert record == VIEW  # the input is not written to


def test_format_email_message_keeps_only_the_mapped_fields():
    billing = {
        "name": "Penny Lane",
        "email": "penny@lane.com",
        "country": "Moldania",
        "birth_year": 1996,
        "nudge_msg": "We are glad you're enjoying your Cultflicks experience.",
        "metrics_msg": "You have watched a total of 6 movies this month.",
        "plan": "Premium",
    }
    [output] = single_output(run(fixture_node(CULTFLICKS, "Format email message"), billing))
    assert output == {
        "subject": "Thank you for using Cultflicks!",
        "message": (
            "Hi dear Penny Lane, Your email is penny@lane.com, your country is Moldania, and "
            "you were born on 1996. We are glad you're enjoying your Cultflicks experience. "
            "You have watched a total of 6 movies this month.  Best regards, Cultflicks"
        ),
    }


def test_xmap_computes_over_the_input_and_writes_nested_fields_on_a_copy():
    node = make_node(
        "transforms/xmap",
        {
            "keepFields": {"enabled": True},
            "mappings": [
                {"field": "n", "expression": "@{payload.n} * 2"},
                {"field": "meta.doubled", "expression": "@{payload.n} * 2"},
                {"field": "copy", "expression": "@{payload.meta}"},
            ],
        },
    )
    record = {"n": Decimal("1.25"), "meta": {"source": "x"}}
    [output] = single_output(run(node, record))
    # Each expression reads the input, not the fields set before it.
    assert output == {
        "n": Decimal("2.50"),
        "meta": {"source": "x", "doubled": Decimal("2.50")},
        "copy": {"source": "x"},
    }
    assert record == {"n": Decimal("1.25"), "meta": {"source": "x"}}
    assert output["copy"] is not record["meta"]


def test_xmap_fails_only_the_records_it_cannot_compute():
    node = fixture_node(CULTFLICKS, "Calculate view percent")
    emit = run(node, VIEW, {**VIEW, "full_duration": 0}, {**VIEW, "view_duration": None})
    assert [payload["view_percent"] for payload in single_output(emit)] == [58]
    assert emit.failed == {
        1: (
            "transforms/xmap: view_percent: division by zero in "
            "100 * @{payload.view_duration} / @{payload.full_duration}"
        ),
        2: (
            "transforms/xmap: view_percent: "
            "'*' needs numbers, got null from @{payload.view_duration}"
        ),
    }


def test_xmap_with_a_malformed_expression_fails_every_record_naming_the_mapping():
    node = make_node(
        "transforms/xmap",
        {
            "keepFields": {"enabled": False},
            "mappings": [{"field": "subject", "expression": "'single quoted'"}],
        },
    )
    emit = run(node, {"a": 1}, {"a": 2})
    assert emit.outputs == {}
    assert emit.failed[0] == emit.failed[1]
    assert emit.failed[0].startswith(
        "transforms/xmap: mappings[0] (subject): string literals take double quotes"
    )


# --- Date ------------------------------------------------------------------------------------


def test_the_cultflicks_date_node_sets_the_end_of_the_day():
    node = fixture_node(CULTFLICKS, "Date")
    record = {"title": "Bad Taste", "timestamp": "2022-Jan-03"}
    [output] = single_output(run(node, record))
    assert output == {"title": "Bad Taste", "timestamp": "2022-01-03T23:59:59.000Z"}
    assert record["timestamp"] == "2022-Jan-03"


def date_node(**item: Any) -> dict:
    return make_node("transforms/date", {"items": [{"field": "at", "mode": "modify", **item}]})


def convert(value: Any, **item: Any) -> Any:
    emit = run(date_node(**item), {"at": value})
    assert emit.failed == {}, emit.failed
    return single_output(emit)[0]["at"]


@pytest.mark.parametrize(
    ("value", "input_format", "output_format", "expected"),
    [
        (
            "2022-Jan-01",
            "YYYY-MMM-DD",
            "YYYY-MM-DD HH:mm:ss.SSS Z",
            "2022-01-01 00:00:00.000 +00:00",
        ),
        ("2022-january-1", "YYYY-MMMM-D", "YYYYMMDD", "20220101"),
        ("15/03/24 1:05 pm", "DD/MM/YY h:mm a", "YYYY-MM-DDTHH:mm", "2024-03-15T13:05"),
        ("15/03/24 12:05 AM", "DD/MM/YY hh:mm A", "HH:mm", "00:05"),
        (
            "2024-03-15T12:00:00.5+02:00",
            "YYYY-MM-DDTHH:mm:ss.SZ",
            "HH:mm:ss.SSS ZZ",
            "10:00:00.500 +0000",
        ),
        ("2024-03-15 12:00 -0130", "YYYY-MM-DD HH:mm ZZ", "HH:mm", "13:30"),
        ("1710498600", "X", "YYYY-MM-DD HH:mm:ss", "2024-03-15 10:30:00"),
        ("1710498600123", "x", "SSS", "123"),
        ("2024-03-15", "YYYY-MM-DD", "X", "1710460800"),
        ("2024-03-15", "YYYY-MM-DD", "x", "1710460800000"),
        (
            "2024-03-15",
            "YYYY-MM-DD",
            "dddd ddd dd d, Do MMMM MMM, DDDD",
            "Friday Fri Fr 5, 15th March Mar, 075",
        ),
        ("2024-03-01", "YYYY-MM-DD", "Do M D DDD h A", "1st 3 1 61 12 AM"),
        ("Friday 2024-03-22", "dddd YYYY-MM-DD", "[Week of] YYYY-MM-DD", "Week of 2024-03-22"),
        ("00068", "YYDDD", "YYYY-MM-DD", "2000-03-08"),
        ("10:15", "HH:mm", "YYYY-MM-DD HH:mm", "2024-03-15 10:15"),  # no date part: today
    ],
)
def test_dates_are_read_and_written_with_moment_tokens(
    value, input_format, output_format, expected
):
    assert convert(value, inputFormat=input_format, outputFormat=output_format) == expected


def test_without_formats_iso_text_and_epoch_milliseconds_are_read_and_moment_default_written():
    assert convert("2024-03-15T10:29:31.120Z") == "2024-03-15T10:29:31+00:00"
    assert convert("2024-03-15T12:29:31+02:00") == "2024-03-15T10:29:31+00:00"
    assert convert("2024-03-15") == "2024-03-15T00:00:00+00:00"
    assert convert(1710498600000) == "2024-03-15T10:30:00+00:00"


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ({"hour": {"mode": "add", "value": 5}}, "2024-01-31 15:30:00"),
        ({"hours": {"mode": "subtract", "value": 11}}, "2024-01-30 23:30:00"),
        ({"month": {"mode": "add", "value": 1}}, "2024-02-29 10:30:00"),  # clamped
        (
            {"year": {"mode": "add", "value": 1}, "month": {"mode": "add", "value": 1}},
            "2025-02-28 10:30:00",
        ),
        ({"week": {"mode": "add", "value": 1}}, "2024-02-07 10:30:00"),
        ({"day": {"mode": "subtract", "value": 31}}, "2023-12-31 10:30:00"),
        ({"ms": {"mode": "add", "value": 1500}}, "2024-01-31 10:30:01"),
        ({"hour": {"mode": "set", "value": 24}}, "2024-02-01 00:30:00"),  # carries over
        (
            {"minute": {"mode": "set", "value": 0}, "second": {"mode": "set", "value": 0}},
            "2024-01-31 10:00:00",
        ),
        ({"date": {"mode": "set", "value": 1}}, "2024-01-01 10:30:00"),
        ({"month": {"mode": "set", "value": 1}}, "2024-02-29 10:30:00"),  # months count from 0
        ({"year": {"mode": "set", "value": 2023}}, "2023-01-31 10:30:00"),
        ({"day": {"mode": "set", "value": 0}}, "2024-01-28 10:30:00"),  # Sunday of that week
        # Set is applied from the largest unit down, whatever the key order.
        (
            {"date": {"mode": "set", "value": 31}, "month": {"mode": "set", "value": 3}},
            "2024-05-01 10:30:00",
        ),
    ],
)
def test_date_operations_follow_moment(operation, expected):
    assert (
        convert(
            "2024-01-31 10:30:00",
            inputFormat="YYYY-MM-DD HH:mm:ss",
            outputFormat="YYYY-MM-DD HH:mm:ss",
            operation=operation,
        )
        == expected
    )


def test_date_changes_a_nested_field_on_a_copy():
    node = make_node(
        "transforms/date",
        {"items": [{"field": "event.at", "mode": "modify", "outputFormat": "YYYY"}]},
    )
    record = {"event": {"at": "2024-03-15T00:00:00Z", "kind": "x"}, "other": 1}
    assert single_output(run(node, record)) == [{"event": {"at": "2024", "kind": "x"}, "other": 1}]
    assert record["event"]["at"] == "2024-03-15T00:00:00Z"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"at": "2022/Jan/01"}, "'2022/Jan/01' does not match the date format 'YYYY-MMM-DD'"),
        ({"at": "2022-Foo-01"}, "'Foo' in '2022-Foo-01' is not a month name"),
        ({"at": "2022-Feb-30"}, "'2022-Feb-30' is not a valid date"),
        ({"other": 1}, "transforms/date: at is missing"),
        ({"at": None}, "transforms/date: at is missing"),
    ],
)
def test_dates_that_cannot_be_read_fail_the_record(record, reason):
    emit = run(date_node(inputFormat="YYYY-MMM-DD"), record)
    assert emit.failed == {0: reason}


def test_dates_without_a_format_fail_on_text_that_is_not_iso_or_on_objects():
    emit = run(date_node(), {"at": "yesterday"}, {"at": {"a": 1}})
    assert emit.failed == {
        0: "'yesterday' is not an ISO 8601 date",
        1: "transforms/date: at is not a date but '{\"a\":1}'",
    }


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"mode": "convert"}, "items[0]: unsupported mode 'convert' (known: modify)"),
        ({"operation": {"fortnight": {"mode": "add", "value": 1}}}, "unknown unit 'fortnight'"),
        (
            {"operation": {"hour": {"mode": "multiply", "value": 1}}},
            "mode must be set, add or subtract",
        ),
        ({"operation": {"hour": {"mode": "add", "value": 1.5}}}, "value must be a whole number"),
        ({"operation": {"week": {"mode": "set", "value": 1}}}, "the week cannot be set"),
    ],
)
def test_date_params_that_cannot_work_fail_every_record(item, problem):
    node = make_node("transforms/date", {"items": [{"field": "at", "mode": "modify", **item}]})
    emit = run(node, {"at": "2024-01-01"})
    assert problem in emit.failed[0]
    assert emit.failed[0].startswith("transforms/date: ")


# --- Validate --------------------------------------------------------------------------------


def test_validate_passes_a_valid_printer_event_unchanged():
    emit = run(fixture_node(PRINTING, "Validate"), PRINTER_EVENT)
    assert single_output(emit) == [PRINTER_EVENT]


def test_validate_fails_an_invalid_event_with_the_schema_messages():
    emit = run(fixture_node(PRINTING, "Validate"), PRINTER_EVENT, INVALID_PRINTER_EVENT)
    assert single_output(emit) == [PRINTER_EVENT]
    assert emit.failed == {
        1: (
            "paper: 'XYZ123' does not match 'A.'; "
            "printerId: 'invalidShouldBeInt' is not of type 'integer'; "
            "timestamp: 'UNKNOWN' does not match '^(2.*)$'"
        )
    }


def test_validate_reports_missing_fields_and_nested_paths():
    node = make_node(
        "transforms/validate",
        {
            "schema": {
                "type": "object",
                "required": ["id"],
                "properties": {"items": {"type": "array", "items": {"type": "number"}}},
            }
        },
    )
    emit = run(node, {"items": [1, "two"]})
    assert emit.failed == {
        0: "'id' is a required property; items[1]: 'two' is not of type 'number'"
    }


def test_validate_counts_whole_decimals_as_integers_and_decimals_as_numbers():
    node = make_node(
        "transforms/validate",
        {"schema": {"properties": {"n": {"type": "integer"}, "x": {"type": "number"}}}},
    )
    emit = run(
        node, {"n": Decimal("16.0"), "x": Decimal("0.1")}, {"n": Decimal("16.5")}, {"n": True}
    )
    assert len(single_output(emit)) == 1
    assert emit.failed == {
        1: "n: Decimal('16.5') is not of type 'integer'",
        2: "n: True is not of type 'integer'",
    }


def test_validate_with_an_unusable_schema_fails_every_record():
    node = make_node("transforms/validate", {"schema": {"type": "thing"}})
    emit = run(node, {"a": 1})
    assert emit.failed[0].startswith("transforms/validate: unusable schema: ")


# --- Split -----------------------------------------------------------------------------------


def outputs_by_id(emit: Emit) -> dict[str | None, list[Any]]:
    return {output: [item.payload for item in items] for output, items in emit.outputs.items()}


def test_check_ink_level_compares_numbers_with_numeric_text():
    node = fixture_node(PRINTING, "Check Ink Level")
    low = "7a5d77b0-4737-11e9-9166-6b7c69bb46fd"
    emit = run(node, {**PRINTER_EVENT, "inkLevel": 15}, {**PRINTER_EVENT, "inkLevel": 45})
    assert outputs_by_id(emit) == {low: [{**PRINTER_EVENT, "inkLevel": 15}]}  # 45 is discarded
    assert emit.failed == {}


def test_view_completion_check_takes_the_first_matching_rule():
    node = fixture_node(CULTFLICKS, "View completion check")
    completed = "132bb920-d754-11ec-9fd8-49df506d0834"
    not_completed = "2ae506c0-d754-11ec-9fd8-49df506d0834"
    # 90.5 matches both `gt 90` and `lt 91`: the first rule wins.
    views = [{"view_percent": 100}, {"view_percent": 58}, {"view_percent": Decimal("90.5")}]
    emit = run(node, *views)
    assert outputs_by_id(emit) == {completed: [views[0], views[2]], not_completed: [views[1]]}


def test_route_and_maintenance_compare_text():
    route = fixture_node(PRINTING, "Route")
    email = "358a9371-6e18-11f0-a4b5-ff17eb67b466"
    deactivate = "5c4324a1-6e18-11f0-a4b5-ff17eb67b466"

    def threshold(action: str) -> dict:
        return {"userId": "104", "thresholdReached": {"customFields": {"action": action}}}

    emit = run(
        route, threshold("DEACTIVATE_PRINTER"), threshold("EMAIL_MAINTENANCE"), {}, threshold("x")
    )
    assert outputs_by_id(emit) == {
        deactivate: [threshold("DEACTIVATE_PRINTER")],
        email: [threshold("EMAIL_MAINTENANCE")],
    }
    maintenance = fixture_node(PRINTING, "Maintenance")
    emit = run(maintenance, {"status": "Needs service"}, {"status": "Normal"})
    assert outputs_by_id(emit) == {
        "7a5d77b0-4737-11e9-9166-6b7c69bb46fd": [{"status": "Needs service"}]
    }


def split_node(
    op: str, value: Any, key: str = "${payload.k}", on_no_match: str = "discard"
) -> dict:
    return make_node(
        "transforms/split",
        {
            "multiOutput": {"configurable": {"outputs": [{"id": "yes"}, {"id": "no"}]}},
            "rules": [{"key": key, "op": op, "value": value, "output": "yes"}],
            "onNoMatch": on_no_match,
        },
    )


def matches(op: str, value: Any, key_value: Any) -> bool:
    record = {} if key_value is basic.MISSING else {"k": key_value}
    return "yes" in run(split_node(op, value), record).outputs


@pytest.mark.parametrize(
    ("op", "value", "key_value", "expected"),
    [
        ("eq", "21", 21, True),
        ("eq", "21.0", 21, True),
        ("eq", 21, "21", True),
        ("eq", "abc", "abc", True),
        ("eq", "abc", "ABC", False),
        ("eq", "true", True, True),
        ("eq", "", basic.MISSING, True),
        ("eq", "x", basic.MISSING, False),
        ("ne", "x", basic.MISSING, True),
        ("ne", "21", 21, False),
        ("neq", "20", 21, True),
        ("lt", "21", 15, True),
        ("lt", "21", 21, False),
        ("lt", "21", "3", True),  # numeric text compares as a number, not as text
        ("lt", "b", "a", True),  # text compares as text
        ("lt", "21", basic.MISSING, False),
        ("lt", "21", None, False),
        ("le", "21", 21, True),
        ("lte", "21", Decimal("21.5"), False),
        ("gt", "90", Decimal("90.5"), True),
        ("ge", "90", 90, True),
        ("gte", "90", 89, False),
        ("contains", "ink", "Low ink level", True),
        ("contains", "2", 123, True),
        ("contains", "b", ["a", "b"], True),
        ("contains", "2", [1, 2], True),
        ("contains", "z", ["a", "b"], False),
        ("contains", "a", basic.MISSING, False),
        ("notcontains", "z", "abc", True),
        ("not_contains", "a", "abc", False),
        ("regexp", "^Needs", "Needs service", True),
        ("regex", "^Needs", "Normal", False),
        ("match", "^1\\d\\d$", 104, True),
        ("regexp", ".*", basic.MISSING, False),
    ],
)
def test_split_operators(op, value, key_value, expected):
    assert matches(op, value, key_value) is expected


def test_split_compares_objects_as_json_text():
    assert matches("contains", '"brand":"HP"', {"brand": "HP"}) is True


def test_split_sends_unmatched_records_to_the_no_match_output_when_named():
    emit = run(split_node("eq", "a", on_no_match="no"), {"k": "a"}, {"k": "b"})
    assert outputs_by_id(emit) == {"yes": [{"k": "a"}], "no": [{"k": "b"}]}


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        (split_node("between", 1), "rules[0]: unknown op 'between' (known: eq, ne, lt, le, gt, ge"),
        (split_node("regexp", "(unclosed"), "rules[0]: bad regular expression"),
        (split_node("eq", 1, key="${payload.k"), "unclosed reference"),
        (
            split_node("eq", 1, on_no_match="elsewhere"),
            "onNoMatch must be 'discard' or an output id",
        ),
    ],
)
def test_split_params_that_cannot_work_fail_every_record(node, problem):
    emit = run(node, {"k": 1}, {"k": 2})
    assert set(emit.failed) == {0, 1}
    assert problem in emit.failed[0]


def test_split_rules_must_name_a_declared_output():
    node = split_node("eq", 1)
    node["params"]["rules"][0]["output"] = "undeclared"
    emit = run(node, {"k": 1})
    assert emit.failed == {0: "transforms/split: rules[0]: output 'undeclared' is not declared"}
