"""The rules of a metric definition (reporting.definitions) as pure functions: which
aggregations fit which value types (the table written out here, not imported), what a
property path is, and that any JSON at all is either a definition or a DefinitionInvalid
naming API fields, never another exception. The API's answers to the same rules are in
test_metric_definitions_api.py."""

from __future__ import annotations

import datetime
import string
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reporting import definitions
from reporting.definitions import (
    DefinitionInvalid,
    Filter,
    Timeframe,
    definition_check,
    path_parse,
    timeframe_parse,
)

PROPERTY_TESTS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- Aggregations and value types ---------------------------------------------------------

ALLOWED = {
    "NUMERIC": {"COUNT", "SUM", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST"},
    "STRING": {"COUNT", "UNIQUE_COUNT", "LATEST"},
    "BOOLEAN": {"COUNT", "UNIQUE_COUNT", "LATEST"},
}
EVERY_AGGREGATION = sorted(ALLOWED["NUMERIC"])


@pytest.mark.parametrize("query_type", ["simple", "indexed"])
@pytest.mark.parametrize("value_type", sorted(ALLOWED))
@pytest.mark.parametrize("aggregation", EVERY_AGGREGATION)
def test_aggregations_fit_value_types_as_the_table_says(query_type, value_type, aggregation):
    check = lambda: definition_check(  # noqa: E731
        query_type=query_type,
        aggregation_type=aggregation,
        event_name="api_call",
        value_type=value_type,
        value_property="$.v",
    )
    if aggregation in ALLOWED[value_type]:
        spec = check()
        assert (spec.aggregation, spec.value_type, spec.path) == (aggregation, value_type, ("v",))
    else:
        with pytest.raises(DefinitionInvalid) as raised:
            check()
        assert [field for field, _ in raised.value.problems] == ["aggregationType"]
        assert value_type in raised.value.problems[0][1]


@pytest.mark.parametrize("aggregation", EVERY_AGGREGATION)
def test_only_count_goes_without_a_value_property(aggregation):
    check = lambda: definition_check(  # noqa: E731
        query_type="simple", aggregation_type=aggregation, event_name="e"
    )
    if aggregation == "COUNT":
        assert check().path == ()
    else:
        with pytest.raises(DefinitionInvalid) as raised:
            check()
        assert [field for field, _ in raised.value.problems] == ["valueProperty"]


def test_the_value_type_defaults_to_numeric():
    spec = definition_check(query_type="simple", aggregation_type="COUNT", event_name="e")
    assert spec.value_type == "NUMERIC" and spec.filters == () and spec.sql is None


def test_every_problem_of_a_definition_is_named_at_once():
    with pytest.raises(DefinitionInvalid) as raised:
        definition_check(
            query_type="indexed",
            aggregation_type="SUM",
            value_type="STRING",
            sql="SELECT 1",
            filters=[{"property": "$.a", "op": "gt", "value": "x"}, {"op": "eq"}],
        )
    assert {field for field, _ in raised.value.problems} == {
        "sql",
        "eventName",
        "valueProperty",
        "aggregationType",
        "filters[0].value",
        "filters[1].property",
    }


def test_a_complex_definition_carries_only_its_sql():
    spec = definition_check(
        query_type="complex",
        aggregation_type="SUM",
        event_name="ignored",
        sql="SELECT count(*) FROM events",
    )
    assert spec == definitions.MetricSpec(
        query_type="complex",
        aggregation=None,
        event_name="",
        value_type="NUMERIC",
        path=(),
        filters=(),
        sql="SELECT count(*) FROM events",
    )


# -- Property paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path",
    [
        ("$.tokens.output", ("tokens", "output")),
        ("tokens.output", ("tokens", "output")),
        ("$.items[0].price", ("items", 0, "price")),
        ("$[3]", (3,)),
        ("[3]", (3,)),
        ('$["a key"]', ("a key",)),
        ("$['a key']['b']", ("a key", "b")),
        ('$["say \\"hi\\""]', ('say "hi"',)),
        ("$['it\\'s']", ("it's",)),
        ('$["$.."]', ("$..",)),
        ("$._under-score9", ("_under-score9",)),
        ("  $.padded  ", ("padded",)),
        ("$" + ".a" * 16, ("a",) * 16),
    ],
)
def test_property_paths_name_keys_and_positions(text, path):
    assert path_parse(text) == path


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "$",
        "$.",
        "$..a",
        "$[x]",
        "$[-1]",
        "$[*]",
        "$.a[",
        "$.a]",
        "$.1a",
        "$.a b",
        "$.a.",
        "$['unterminated]",
        "$[1234567890]",
        "$.a[?(@.b)]",
        "@.a",
        "$" + ".a" * 17,
        "$." + "a" * 499,
        None,
        5,
        ["$.a"],
    ],
)
def test_other_texts_are_not_property_paths(text):
    with pytest.raises(ValueError):
        path_parse(text)


def _written(segment: str | int) -> str:
    if isinstance(segment, int):
        return f"[{segment}]"
    if (
        segment
        and segment[0] in string.ascii_letters + "_"
        and all(char in string.ascii_letters + string.digits + "_-" for char in segment)
    ):
        return f".{segment}"
    return '["' + segment.replace("\\", "\\\\").replace('"', '\\"') + '"]'


segments = st.one_of(
    st.integers(min_value=0, max_value=999_999_999),
    st.text(min_size=0, max_size=12),
)


@PROPERTY_TESTS
@given(st.lists(segments, min_size=1, max_size=16))
def test_a_written_path_reads_back_as_its_segments(path):
    text = "$" + "".join(_written(segment) for segment in path)
    if len(text) <= definitions.MAX_PATH_LENGTH:
        assert path_parse(text) == tuple(path)


@PROPERTY_TESTS
@given(st.text(max_size=60) | st.text(alphabet="$.[]'\"\\ab0-_ ", max_size=30))
def test_any_text_is_a_path_or_a_value_error(text):
    try:
        parsed = path_parse(text)
    except ValueError:
        return
    assert 1 <= len(parsed) <= definitions.MAX_PATH_DEPTH
    assert all(isinstance(segment, str | int) for segment in parsed)


# -- Filters ------------------------------------------------------------------------------


def _filter(op: str, value) -> dict:
    return {"property": "$.a", "op": op, "value": value}


@pytest.mark.parametrize(
    "item, expected",
    [
        (_filter("eq", "x"), Filter(("a",), "eq", "x")),
        (_filter("neq", False), Filter(("a",), "neq", False)),
        (_filter("gt", Decimal("1.5")), Filter(("a",), "gt", Decimal("1.5"))),
        (_filter("lte", -3), Filter(("a",), "lte", -3)),
        (_filter("in", [1, "x", True]), Filter(("a",), "in", (1, "x", True))),
        (_filter("in", list(range(100))), Filter(("a",), "in", tuple(range(100)))),
        (_filter("exists", False), Filter(("a",), "exists", False)),
    ],
)
def test_filters_read_as_path_op_and_value(item, expected):
    spec = definition_check(
        query_type="simple", aggregation_type="COUNT", event_name="e", filters=[item]
    )
    assert spec.filters == (expected,)


@pytest.mark.parametrize(
    "item, field",
    [
        (_filter("gt", "1"), "filters[0].value"),
        (_filter("gte", True), "filters[0].value"),
        (_filter("in", []), "filters[0].value"),
        (_filter("in", list(range(101))), "filters[0].value"),
        (_filter("in", [None]), "filters[0].value"),
        (_filter("exists", 0), "filters[0].value"),
        (_filter("eq", [1]), "filters[0].value"),
        (_filter("contains", "x"), "filters[0].op"),
        ({"property": "$.a", "op": "eq"}, "filters[0].value"),
        ({**_filter("eq", 1), "path": "$.b"}, "filters[0].path"),
        ("a = 1", "filters[0]"),
    ],
)
def test_bad_filters_name_their_place(item, field):
    with pytest.raises(DefinitionInvalid) as raised:
        definition_check(
            query_type="simple", aggregation_type="COUNT", event_name="e", filters=[item]
        )
    assert [where for where, _ in raised.value.problems] == [field]


def test_at_most_ten_filters():
    item = _filter("exists", True)
    ok = definition_check(
        query_type="simple", aggregation_type="COUNT", event_name="e", filters=[item] * 10
    )
    assert len(ok.filters) == 10
    with pytest.raises(DefinitionInvalid) as raised:
        definition_check(
            query_type="simple", aggregation_type="COUNT", event_name="e", filters=[item] * 11
        )
    assert raised.value.problems[0][0] == "filters"


# -- Anything at all: a definition or DefinitionInvalid ----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _near(choices: tuple[str, ...]) -> st.SearchStrategy:
    return st.sampled_from(choices) | json_values


def filter_items() -> st.SearchStrategy:
    return (
        st.fixed_dictionaries(
            {},
            optional={
                "property": st.sampled_from(["$.a", "$..a", "b[0]"]) | json_values,
                "op": _near(definitions.FILTER_OPS),
                "value": json_values,
            },
        )
        | json_values
    )


API_FIELDS = {
    "queryType",
    "aggregationType",
    "eventName",
    "valueType",
    "valueProperty",
    "filters",
    "sql",
}


def _api_field(where: str) -> str:
    return where.split("[", 1)[0].split(".", 1)[0]


@PROPERTY_TESTS
@given(
    query_type=_near(("simple", "indexed")),
    aggregation_type=_near(definitions.AGGREGATIONS),
    event_name=st.sampled_from(["api_call", "", " "]) | json_values,
    value_type=_near(definitions.VALUE_TYPES),
    value_property=st.sampled_from(["$.a", "$.", "a.b[1]"]) | json_values,
    filters=st.none() | st.lists(filter_items(), max_size=3) | json_values,
    sql=st.none() | json_values,
)
def test_any_json_is_a_definition_or_names_api_fields(**fields):
    try:
        spec = definition_check(**fields)
    except DefinitionInvalid as invalid:
        assert invalid.problems
        assert {_api_field(where) for where, _ in invalid.problems} <= API_FIELDS
        return
    assert spec.query_type == fields["query_type"]
    assert spec.aggregation in definitions.AGGREGATIONS_FOR[spec.value_type]


SQL_WORDS = [
    "SELECT",
    "count(*)",
    "sum((payload->>'n')::numeric)",
    "FROM",
    "events",
    "WHERE",
    "type = 'a'",
    ";",
    "DELETE",
    "pg_sleep(1)",
    "(",
    ")",
    "1",
    "--",
    "/*",
    "$1",
    "UNION",
    "WITH",
    "e AS",
]


@PROPERTY_TESTS
@given(
    sql=st.text(max_size=40) | st.lists(st.sampled_from(SQL_WORDS), max_size=10).map(" ".join),
    value_type=st.none() | _near(definitions.VALUE_TYPES),
)
def test_any_complex_definition_is_checked_or_names_api_fields(sql, value_type):
    try:
        spec = definition_check(query_type="complex", sql=sql, value_type=value_type)
    except DefinitionInvalid as invalid:
        assert {_api_field(where) for where, _ in invalid.problems} <= {"sql", "valueType"}
        return
    assert spec.sql == sql and spec.value_type == "NUMERIC"


def test_an_unknown_query_type_is_named_alone():
    with pytest.raises(DefinitionInvalid) as raised:
        definition_check(query_type="SIMPLE", aggregation_type="MEDIAN")
    assert raised.value.problems == [
        ("queryType", "queryType must be one of: simple, indexed, complex.")
    ]


# -- Timeframes ---------------------------------------------------------------------------

UTC = datetime.UTC


def _at(*parts) -> datetime.datetime:
    return datetime.datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, Timeframe("ALL")),
        ({"type": "ALL"}, Timeframe("ALL")),
        (
            {"type": "RANGE", "start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"},
            Timeframe("RANGE", _at(2024, 1, 1), _at(2024, 1, 2)),
        ),
        (
            {
                "type": "ABSOLUTE",
                "start": "2024-01-01T02:00:00+02:00",
                "end": "2024-01-01T00:00:01Z",
            },
            Timeframe("RANGE", _at(2024, 1, 1), _at(2024, 1, 1, 0, 0, 1)),
        ),
        ({"type": "CURRENT_CYCLE"}, Timeframe("CURRENT_CYCLE")),
        (
            {"type": "CURRENT_CYCLE", "accountId": "acc-1"},
            Timeframe("CURRENT_CYCLE", account_id="acc-1"),
        ),
    ],
)
def test_timeframes_read_as_type_and_bounds(raw, expected):
    assert timeframe_parse(raw) == expected


# Years 2 to 9998: the edges of the calendar have their own test below.
moments = st.datetimes(
    min_value=datetime.datetime(2, 1, 1),
    max_value=datetime.datetime(9998, 12, 31),
    timezones=st.none() | st.timezones(),
).map(lambda moment: moment.isoformat())
timeframe_values = (
    st.fixed_dictionaries(
        {},
        optional={
            # Lists and objects as the type have their own test below.
            "type": st.sampled_from(("ALL", "RANGE", "ABSOLUTE", "CURRENT_CYCLE"))
            | st.none()
            | st.booleans()
            | st.integers()
            | st.text(max_size=12),
            "start": moments | json_values,
            "end": moments | json_values,
            "accountId": json_values,
        },
    )
    | json_values
)


@PROPERTY_TESTS
@given(raw=timeframe_values)
def test_any_timeframe_is_parsed_or_names_timeframe_fields(raw):
    try:
        parsed = timeframe_parse(raw)
    except DefinitionInvalid as invalid:
        assert all(where.startswith("timeframe") for where, _ in invalid.problems)
        return
    assert parsed.type in definitions.TIMEFRAME_TYPES
    if parsed.type == "RANGE":
        assert parsed.start < parsed.end
        assert parsed.start.utcoffset() == parsed.end.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    "start, end",
    [
        ("0001-01-01T00:00:00+01:00", "2024-01-01T00:00:00Z"),
        ("2024-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_moments_outside_the_calendar_in_utc_name_the_timeframe(start, end):
    with pytest.raises(DefinitionInvalid) as raised:
        timeframe_parse({"type": "RANGE", "start": start, "end": end})
    assert raised.value.problems[0][0].startswith("timeframe.")


@pytest.mark.parametrize("kind", [["RANGE"], {"a": 1}], ids=["list", "object"])
def test_a_type_that_is_not_a_string_names_timeframe_type(kind):
    with pytest.raises(DefinitionInvalid) as raised:
        timeframe_parse({"type": kind})
    assert raised.value.problems[0][0] == "timeframe.type"
