"""The rules of a metric definition (`/v1/metrics`): which query types, aggregations and
value types go together, what a property path and a filter may say.

One place for them, so the API, the preview and the admin's form reject the same
definitions with the same words. A definition that breaks one raises `DefinitionInvalid`
with (field, message) pairs, the field named as the API spells it.

What a metric reads (the same for every query type, so that they agree):

* the operator's records of the customer whose `type` is `eventName` and whose status
  is PROCESSED (a record counts once its streams have run over it; queued records and
  records that failed do not), with `event_time` in the timeframe;
* that pass every filter;
* and, when `valueProperty` is set, whose property holds a value of `valueType` (a
  NUMERIC metric skips a record whose property is a string, say). COUNT without a
  property counts the records themselves.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

SIMPLE, INDEXED, COMPLEX = "simple", "indexed", "complex"
QUERY_TYPES = (SIMPLE, INDEXED, COMPLEX)

COUNT, SUM, MIN, MAX, AVG = "COUNT", "SUM", "MIN", "MAX", "AVG"
UNIQUE_COUNT, LATEST = "UNIQUE_COUNT", "LATEST"
AGGREGATIONS = (COUNT, SUM, MIN, MAX, AVG, UNIQUE_COUNT, LATEST)

NUMERIC, STRING, BOOLEAN = "NUMERIC", "STRING", "BOOLEAN"
VALUE_TYPES = (NUMERIC, STRING, BOOLEAN)

# Arithmetic and ordering only mean something for numbers (ordering strings would depend
# on a collation); counting, distinct values and the latest value fit every type.
AGGREGATIONS_FOR = {
    NUMERIC: AGGREGATIONS,
    STRING: (COUNT, UNIQUE_COUNT, LATEST),
    BOOLEAN: (COUNT, UNIQUE_COUNT, LATEST),
}

EQ, NEQ, GT, GTE, LT, LTE, IN, EXISTS = "eq", "neq", "gt", "gte", "lt", "lte", "in", "exists"
FILTER_OPS = (EQ, NEQ, GT, GTE, LT, LTE, IN, EXISTS)
ORDERING_OPS = (GT, GTE, LT, LTE)

MAX_FILTERS = 10
MAX_IN_VALUES = 100
MAX_PATH_DEPTH = 16
MAX_PATH_LENGTH = 500
MAX_SQL_LENGTH = 20_000
MAX_NAME_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 200


class DefinitionInvalid(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in problems))
        self.problems = problems


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Filter:
    path: Path
    op: str
    value: Any


@dataclass(frozen=True)
class MetricSpec:
    """What a definition computes, checked. `path` is empty when the metric reads no
    property (COUNT of records); complex metrics carry only `sql`."""

    query_type: str
    aggregation: str | None
    event_name: str
    value_type: str
    path: Path
    filters: tuple[Filter, ...]
    sql: str | None


# -- Property paths ---------------------------------------------------------------------

# `$.tokens.output`, `$.items[0].price`, `$["key with spaces"]`; the leading `$.` may be
# left out (`tokens.output`). Only keys and array positions: a path names one value.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INDEX = re.compile(r"\[(\d{1,9})\]")
_QUOTED = re.compile(r"""\[(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\]""")


def path_parse(text: str) -> Path:
    """The keys and positions of a property path; ValueError saying why if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a property path such as $.tokens.output")
    if len(text) > MAX_PATH_LENGTH:
        raise ValueError(f"must be at most {MAX_PATH_LENGTH} characters")
    rest = text.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    elif not rest.startswith("["):
        rest = "." + rest
    segments: list[str | int] = []
    while rest:
        if rest.startswith("."):
            match = _NAME.match(rest, 1)
            if not match:
                raise ValueError(
                    f"{text!r} is not a property path: after '.' comes a name (letters, "
                    'digits, _ and -); write other keys as ["key"]'
                )
            segments.append(match.group(0))
            rest = rest[match.end() :]
        elif match := _INDEX.match(rest):
            segments.append(int(match.group(1)))
            rest = rest[match.end() :]
        elif match := _QUOTED.match(rest):
            quoted = match.group(1) if match.group(1) is not None else match.group(2)
            segments.append(re.sub(r"\\(.)", r"\1", quoted))
            rest = rest[match.end() :]
        else:
            raise ValueError(
                f"{text!r} is not a property path such as $.tokens.output or $.items[0].price"
            )
    if not segments:
        raise ValueError("must name a property, such as $.tokens.output")
    if len(segments) > MAX_PATH_DEPTH:
        raise ValueError(f"may be at most {MAX_PATH_DEPTH} levels deep")
    return tuple(segments)


# -- Filters ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _filter_check(index: int, item: Any, problems: list[tuple[str, str]]) -> Filter | None:
    where = f"filters[{index}]"
    if not isinstance(item, dict):
        problems.append((where, 'Each filter is an object: {"property", "op", "value"}.'))
        return None
    unknown = sorted(set(item) - {"property", "op", "value"})
    if unknown:
        problems.append((f"{where}.{unknown[0]}", "Unknown field."))
        return None
    try:
        path = path_parse(item.get("property"))
    except ValueError as error:
        problems.append((f"{where}.property", f"property {error}."))
        return None
    op = item.get("op")
    if op not in FILTER_OPS:
        problems.append((f"{where}.op", f"op must be one of: {', '.join(FILTER_OPS)}."))
        return None
    if "value" not in item:
        problems.append((f"{where}.value", "This field is required."))
        return None
    value = item["value"]
    if op == EXISTS:
        if not isinstance(value, bool):
            problems.append((f"{where}.value", "exists takes true or false."))
            return None
    elif op in ORDERING_OPS:
        if not _is_number(value):
            problems.append((f"{where}.value", f"{op} compares numbers: value must be a number."))
            return None
    elif op == IN:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            problems.append((f"{where}.value", f"in takes a list of 1 to {MAX_IN_VALUES} values."))
            return None
        if not all(_is_scalar(each) for each in value):
            problems.append((f"{where}.value", "in takes strings, numbers and booleans."))
            return None
        value = tuple(value)
    elif not _is_scalar(value):
        problems.append((f"{where}.value", f"{op} takes a string, a number or a boolean."))
        return None
    return Filter(path, op, value)


def filters_check(filters: Any, problems: list[tuple[str, str]]) -> tuple[Filter, ...]:
    if filters is None:
        return ()
    if not isinstance(filters, list):
        problems.append(("filters", "filters is a list of {property, op, value} objects."))
        return ()
    if len(filters) > MAX_FILTERS:
        problems.append(("filters", f"At most {MAX_FILTERS} filters."))
        return ()
    checked = [_filter_check(index, item, problems) for index, item in enumerate(filters)]
    return tuple(each for each in checked if each is not None)


# -- A whole definition -------------------------------------------------------------------


def definition_check(
    *,
    query_type: Any,
    aggregation_type: Any = None,
    event_name: Any = None,
    value_type: Any = None,
    value_property: Any = None,
    filters: Any = None,
    sql: Any = None,
) -> MetricSpec:
    """Check a definition's computing fields together; return what it computes."""
    problems: list[tuple[str, str]] = []
    if query_type not in QUERY_TYPES:
        raise DefinitionInvalid(
            [("queryType", f"queryType must be one of: {', '.join(QUERY_TYPES)}.")]
        )
    if value_type is not None and value_type not in VALUE_TYPES:
        problems.append(("valueType", f"valueType must be one of: {', '.join(VALUE_TYPES)}."))
    if query_type == COMPLEX:
        return _complex_check(value_type, value_property, filters, sql, problems)
    if sql not in (None, ""):
        problems.append(("sql", "sql is only for complex metrics."))
    if aggregation_type is None:
        problems.append(("aggregationType", f"{query_type} metrics need an aggregationType."))
    elif aggregation_type not in AGGREGATIONS:
        problems.append(
            ("aggregationType", f"aggregationType must be one of: {', '.join(AGGREGATIONS)}.")
        )
    if not isinstance(event_name, str) or not event_name.strip():
        problems.append(("eventName", f"{query_type} metrics need an eventName (a record type)."))
    elif len(event_name) > MAX_EVENT_NAME_LENGTH:
        problems.append(("eventName", f"At most {MAX_EVENT_NAME_LENGTH} characters."))
    value_type = value_type or NUMERIC
    path: Path = ()
    if value_property not in (None, ""):
        try:
            path = path_parse(value_property)
        except ValueError as error:
            problems.append(("valueProperty", f"valueProperty {error}."))
    elif aggregation_type in AGGREGATIONS and aggregation_type != COUNT:
        problems.append(
            ("valueProperty", f"{aggregation_type} reads a value: valueProperty is required.")
        )
    if (
        aggregation_type in AGGREGATIONS
        and value_type in VALUE_TYPES
        and aggregation_type not in AGGREGATIONS_FOR[value_type]
    ):
        allowed = ", ".join(AGGREGATIONS_FOR[value_type])
        problems.append(
            (
                "aggregationType",
                f"{aggregation_type} does not apply to {value_type} values; "
                f"{value_type} metrics take {allowed}.",
            )
        )
    checked_filters = filters_check(filters, problems)
    if problems:
        raise DefinitionInvalid(problems)
    return MetricSpec(
        query_type=query_type,
        aggregation=aggregation_type,
        event_name=event_name,
        value_type=value_type,
        path=path,
        filters=checked_filters,
        sql=None,
    )


COMPUTING_FIELDS = (
    "query_type",
    "aggregation_type",
    "event_name",
    "value_type",
    "value_property",
    "filters",
    "sql",
)


def definition_from(values: Mapping[str, Any]) -> MetricSpec:
    """`definition_check` of a definition given by its field names (a request's checked
    fields, a form's, a stored row's), empty values meaning absent."""
    return definition_check(**{field: values.get(field) or None for field in COMPUTING_FIELDS})


def _complex_check(value_type, value_property, filters, sql, problems) -> MetricSpec:
    # Imported here: the sandbox pulls in sqlglot, which only complex metrics need.
    from reporting.sandbox import SqlRejected, sql_check

    if value_type not in (None, NUMERIC):
        problems.append(("valueType", "A complex metric's value is a number: NUMERIC."))
    if value_property not in (None, ""):
        problems.append(("valueProperty", "Complex metrics read what their SQL selects."))
    if filters not in (None, []):
        problems.append(("filters", "Complex metrics filter in their SQL (WHERE)."))
    if not isinstance(sql, str) or not sql.strip():
        problems.append(("sql", "Complex metrics need sql: one SELECT over events."))
    elif len(sql) > MAX_SQL_LENGTH:
        problems.append(("sql", f"At most {MAX_SQL_LENGTH} characters."))
    else:
        try:
            sql_check(sql)
        except SqlRejected as rejected:
            problems.append(("sql", str(rejected)))
    if problems:
        raise DefinitionInvalid(problems)
    return MetricSpec(
        query_type=COMPLEX,
        aggregation=None,
        event_name="",
        value_type=NUMERIC,
        path=(),
        filters=(),
        sql=sql,
    )


# -- Timeframes of a value ---------------------------------------------------------------

ALL, RANGE, CURRENT_CYCLE = "ALL", "RANGE", "CURRENT_CYCLE"
# ABSOLUTE is the reference's name for a range; it is answered as RANGE.
TIMEFRAME_TYPES = (ALL, RANGE, CURRENT_CYCLE)
_TIMEFRAME_ALIASES = {"ABSOLUTE": RANGE}
_TIMEFRAME_FIELDS = {ALL: set(), RANGE: {"start", "end"}, CURRENT_CYCLE: {"accountId"}}


@dataclass(frozen=True)
class Timeframe:
    type: str
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    account_id: str | None = None


def _moment(value: Any, field: str, problems: list[tuple[str, str]]) -> datetime.datetime | None:
    parsed = None
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        problems.append(
            (f"timeframe.{field}", f"{field} must be an ISO 8601 time with a zone (…Z).")
        )
        return None
    try:
        return parsed.astimezone(datetime.UTC)
    except OverflowError:
        problems.append((f"timeframe.{field}", f"{field} is outside the calendar in UTC."))
        return None


def timeframe_parse(raw: Any) -> Timeframe:
    """A timeframe object: {"type": "ALL"} (also when absent), {"type": "RANGE",
    "start", "end"} (start included, end excluded), or {"type": "CURRENT_CYCLE"} with
    an optional accountId."""
    if raw is None:
        return Timeframe(ALL)
    if not isinstance(raw, dict):
        raise DefinitionInvalid([("timeframe", 'timeframe is an object such as {"type": "ALL"}.')])
    kind = raw.get("type")
    if isinstance(kind, str):
        kind = kind.strip().upper()
        kind = _TIMEFRAME_ALIASES.get(kind, kind)
    if kind not in TIMEFRAME_TYPES:
        raise DefinitionInvalid(
            [("timeframe.type", f"type must be one of: {', '.join(TIMEFRAME_TYPES)}.")]
        )
    problems: list[tuple[str, str]] = []
    for field in sorted(set(raw) - {"type"} - _TIMEFRAME_FIELDS[kind]):
        problems.append((f"timeframe.{field}", f"Unknown field for a {kind} timeframe."))
    if kind == RANGE:
        start = _moment(raw.get("start"), "start", problems)
        end = _moment(raw.get("end"), "end", problems)
        if start is not None and end is not None and start >= end:
            problems.append(("timeframe.end", "end must be after start."))
        if problems:
            raise DefinitionInvalid(problems)
        return Timeframe(RANGE, start, end)
    account_id = raw.get("accountId")
    if account_id is not None and (not isinstance(account_id, str) or not account_id):
        problems.append(("timeframe.accountId", "accountId must be a non-empty string."))
    if problems:
        raise DefinitionInvalid(problems)
    return Timeframe(kind, account_id=account_id)
