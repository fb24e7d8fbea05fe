"""The stateless functions: each record is handled on its own, nothing is remembered.

Rules settled here, from the reference product's documentation and its real exports:

`transforms/map` (the reference product's column filter / field organizer)
    `mappings` is a list of one-key objects `{"<output field>": "<input path>"}`: the key
    names the field written to the output, the value the field read from the input. Both
    real uses agree: "Normalize Fields" maps `{"userId": "printerId"}` over printer
    events that carry `printerId`, and "Column Filter 1" maps `{"printerId": "userId"}`
    back over the meter's records that carry `userId`; `{"brand": "customFields.brand"}`
    reads a nested input field. The documented example of the field organizer says the
    same: `{"Month": "month_dateTime"}` turns `month_dateTime` into `Month`. The output
    holds only the mapped fields, in mapping order. An input path the record does not
    have writes nothing, so when two mappings name one output field (`customer` from
    `customer`, then from `customFields.customer`) the later one wins only if its input
    exists. An output field with dots is written nested.

`transforms/xmap` (the reference product's map with formulas)
    Each mapping sets `field` to its `expression` (see `paths` for the language),
    computed over the input record, in order. With `keepFields.enabled` the output
    starts as the input; otherwise it holds only the mapped fields.

`transforms/split` (route)
    Rules are tried in order and the first that matches routes the record (the
    documentation: "the condition that is first in the order is considered"). `key` is
    a template; `value` is compared with it. Two numbers, or numeric text, compare as
    numbers (an ink level of 15 is `lt` "21"); otherwise as text. Operators: eq, ne,
    lt, le, gt, ge, contains (substring, or an element of a list), notcontains and
    regexp (searched in the key's text); neq, lte, gte, not_contains, regex and match
    are accepted spellings. The documentation's "list" comparisons show no export, so
    their names are unknown and they are refused like any unknown operator. A missing
    key matches no ordering, `eq ""` and `ne` anything else. `onNoMatch` is "discard"
    or the id of one of the outputs.

`transforms/date`
    For each item, the date at `field` is read with `inputFormat` (moment.js tokens; an
    ISO 8601 text when empty, epoch milliseconds for a number), changed by `operation`
    (per unit, `set`, `add` or `subtract`, applied from the largest unit to the
    smallest as moment.js does), and written back with `outputFormat`. Dates are UTC.

A node whose params cannot work (a malformed expression, an unknown operator, an
unusable schema) does not stop the batch: every record reaching it fails with the reason,
which names the node's param, and the stream's authors see it in the failed records.
"""

from __future__ import annotations

import calendar
import copy
import datetime
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jsonschema import validators as jsonschema_validators
from jsonschema.exceptions import SchemaError, ValidationError

from streams.runtime.base import (
    Emit,
    Function,
    Item,
    NodeContext,
    PerItem,
    Reader,
    RecordFailed,
    function,
)
from streams.runtime.paths import (
    MISSING,
    Expression,
    Template,
    assign_path,
    compile_expression,
    compile_template,
    get_path,
    is_number,
    parse_path,
    to_number,
    to_text,
)


class ConfigurationError(ValueError):
    """Params this function cannot work with; every record reaching the node fails."""


def _owned(value: Any) -> Any:
    """A value taken from the input, made safe to hand on: objects and lists are copied,
    since another branch may hold the same input."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _write(record: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """Set `path` in `record`, a top-level object this function built itself: a plain
    field is set in place; a nested one through `assign_path`, which copies the objects
    on the way, as they may still be shared with the input."""
    if len(path) == 1 and isinstance(path[0], str):
        record[path[0]] = value
        return record
    return assign_path(record, path, value)


class _Configured(PerItem):
    """A PerItem that prepares its params once per node instance in `configure` and,
    if they are unusable, fails each record with the reason instead of the batch."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.configuration_error: str | None = None
        try:
            self.configure()
        except (ConfigurationError, ValueError, TypeError, KeyError) as exc:
            self.configuration_error = f"{self.type}: {exc}"

    def configure(self) -> None:
        """Compile params; raise ConfigurationError (or ValueError) if they cannot work."""

    def apply(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        if self.configuration_error is not None:
            raise RecordFailed(self.configuration_error)
        return self.transform(payload)

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        raise NotImplementedError


# --- Readers and writers ---------------------------------------------------------------------


@function("readers/counter")
class Counter(Reader):
    """`max` records, `{"value": 1}` to `{"value": max}`."""

    def read(self) -> list[Any]:
        maximum = self.params.get("max", 1)
        if not isinstance(maximum, int) or isinstance(maximum, bool) or maximum < 1:
            raise ConfigurationError(
                f"readers/counter: max must be a whole number >= 1, got {maximum!r}"
            )
        return [{"value": number} for number in range(1, maximum + 1)]


@function("writers/log")
class LogWriter(Function):
    """Writes each record to the stream's log, at level info."""

    def process(self, items: list[Item], emit: Emit) -> None:
        for item in items:
            self.ctx.log("info", "record", item.payload)


@function("writers/noop")
class NoopWriter(Function):
    """Accepts records and drops them, to end a branch."""

    def process(self, items: list[Item], emit: Emit) -> None:
        return None


# --- Map and expression map ------------------------------------------------------------------


@function("transforms/map")
class Map(_Configured):
    """A new record with only the mapped fields: `{"<output>": "<input path>"}`."""

    def configure(self) -> None:
        self.mappings: list[tuple[tuple, tuple]] = []
        for index, mapping in enumerate(self.params.get("mappings") or []):
            if not isinstance(mapping, dict) or len(mapping) != 1:
                raise ConfigurationError(f"mappings[{index}] must be one {{output: input}} pair")
            ((output, source),) = mapping.items()
            if not isinstance(source, str) or not output:
                raise ConfigurationError(f"mappings[{index}] must map a field name to a path")
            self.mappings.append((parse_path(output), parse_path(source)))

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        record: dict[str, Any] = {}
        for output, source in self.mappings:
            value = get_path(payload, source, MISSING)
            if value is not MISSING:
                record = _write(record, output, _owned(value))
        return [(None, record)]


@function("transforms/xmap")
class ExpressionMap(_Configured):
    """Sets fields from expressions over the input; keeps the other fields if asked."""

    def configure(self) -> None:
        self.keep_fields = bool((self.params.get("keepFields") or {}).get("enabled"))
        self.mappings: list[tuple[str, tuple, Expression]] = []
        for index, mapping in enumerate(self.params.get("mappings") or []):
            field = mapping.get("field")
            if not isinstance(field, str) or not field:
                raise ConfigurationError(f"mappings[{index}] has no field")
            try:
                expression = compile_expression(mapping.get("expression") or "")
            except ValueError as exc:
                raise ConfigurationError(f"mappings[{index}] ({field}): {exc}") from None
            self.mappings.append((field, parse_path(field), expression))

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        if self.keep_fields and not isinstance(payload, dict):
            raise RecordFailed("transforms/xmap: the record is not an object")
        record: dict[str, Any] = dict(payload) if self.keep_fields else {}
        for field, path, expression in self.mappings:
            try:
                value = expression.evaluate(payload)
            except ValueError as exc:
                raise RecordFailed(f"transforms/xmap: {field}: {exc}") from None
            record = _write(record, path, _owned(value))
        return [(None, record)]


# --- Validate --------------------------------------------------------------------------------


def _is_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema counts 16.0 as an integer; payload numbers are int or Decimal.
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        return True
    return isinstance(instance, Decimal | float) and instance == int(instance)


def _is_number(checker: Any, instance: Any) -> bool:
    return is_number(instance)


@function("transforms/validate")
class Validate(_Configured):
    """Passes records that match `schema`; fails the others with the schema's messages,
    e.g. "printerId: 'invalidShouldBeInt' is not of type 'integer'"."""

    def configure(self) -> None:
        schema = self.params.get("schema")
        if not isinstance(schema, dict):
            raise ConfigurationError("schema must be an object")
        # The schema's own `$schema` picks the draft; exports omit it and are written
        # in draft-07 style.
        base = jsonschema_validators.validator_for(
            schema, default=jsonschema_validators.Draft7Validator
        )
        checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
        validator_class = jsonschema_validators.extend(base, type_checker=checker)
        try:
            validator_class.check_schema(schema)
        except SchemaError as exc:
            raise ConfigurationError(f"unusable schema: {exc.message}") from None
        self.validator = validator_class(schema)

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        errors = sorted(self.validator.iter_errors(payload), key=_error_sort_key)
        if errors:
            raise RecordFailed("; ".join(_error_text(error) for error in errors))
        return [(None, payload)]


def _error_sort_key(error: ValidationError) -> tuple[str, str]:
    return ".".join(map(str, error.absolute_path)), error.message


def _error_text(error: ValidationError) -> str:
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return f"{where}: {error.message}" if where else error.message


# --- Split -----------------------------------------------------------------------------------


def _compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1: numerically when both are numbers or numeric text, else as text;
    None when the key is missing or null (which orders against nothing)."""
    if left is None or left is MISSING:
        return None
    left_number, right_number = to_number(left), to_number(right)
    if left_number is not None and right_number is not None:
        left_key, right_key = Decimal(left_number), Decimal(right_number)
    else:
        left_key, right_key = to_text(left), to_text(right)
    return (left_key > right_key) - (left_key < right_key)


def _equals(left: Any, right: Any) -> bool:
    if left is None or left is MISSING:
        return right is None or right == ""
    return _compare(left, right) == 0


def _contains(left: Any, right: Any) -> bool:
    if isinstance(left, list):
        return any(_equals(element, right) for element in left)
    if left is None or left is MISSING:
        return False
    return to_text(right) in to_text(left)


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        order = _compare(left, right)
        return order is not None and test(order)

    return compare


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equals,
    "ne": lambda left, right: not _equals(left, right),
    "lt": _ordered(lambda order: order < 0),
    "le": _ordered(lambda order: order <= 0),
    "gt": _ordered(lambda order: order > 0),
    "ge": _ordered(lambda order: order >= 0),
    "contains": _contains,
    "notcontains": lambda left, right: not _contains(left, right),
}
# Other spellings of the same operators that hand-written streams are likely to use.
_OPERATOR_ALIASES = {
    "neq": "ne",
    "lte": "le",
    "gte": "ge",
    "not_contains": "notcontains",
    "regex": "regexp",
    "match": "regexp",
}


def condition_test(op: Any, value: Any, where: str) -> Callable[[Any], bool]:
    """A test of one value against `value` with a comparison operator as streams spell
    it (split rules, aggregators' flush conditions)."""
    name = _OPERATOR_ALIASES.get(op, op)
    if name == "regexp":
        try:
            pattern = re.compile(to_text(value))
        except re.error as exc:
            raise ConfigurationError(f"{where}: bad regular expression: {exc}") from None
        return lambda key: key is not None and pattern.search(to_text(key)) is not None
    if name not in _OPERATORS:
        known = ", ".join([*_OPERATORS, "regexp"])
        raise ConfigurationError(f"{where}: unknown op {op!r} (known: {known})")
    operator = _OPERATORS[name]
    return lambda key: operator(key, value)


@dataclass(frozen=True)
class _Rule:
    key: Template
    test: Callable[[Any], bool]
    output: str


@function("transforms/split")
class Split(_Configured):
    """Sends each record to the output of the first rule it matches."""

    def configure(self) -> None:
        outputs = ((self.params.get("multiOutput") or {}).get("configurable") or {}).get(
            "outputs"
        ) or []
        output_ids = {output.get("id") for output in outputs if isinstance(output, dict)}
        self.rules: list[_Rule] = []
        for index, rule in enumerate(self.params.get("rules") or []):
            where = f"rules[{index}]"
            if rule.get("output") not in output_ids:
                raise ConfigurationError(f"{where}: output {rule.get('output')!r} is not declared")
            self.rules.append(
                _Rule(
                    key=compile_template(rule.get("key") or ""),
                    test=condition_test(rule.get("op"), rule.get("value"), where),
                    output=rule["output"],
                )
            )
        on_no_match = self.params.get("onNoMatch") or "discard"
        if on_no_match != "discard" and on_no_match not in output_ids:
            raise ConfigurationError(
                f"onNoMatch must be 'discard' or an output id, not {on_no_match!r}"
            )
        self.no_match_output = None if on_no_match == "discard" else on_no_match

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        for rule in self.rules:
            if rule.test(rule.key.render(payload)):
                return [(rule.output, payload)]
        if self.no_match_output is not None:
            return [(self.no_match_output, payload)]
        return []


# --- Date ------------------------------------------------------------------------------------

_MONTHS = list(calendar.month_name)[1:]
_WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTH_NUMBERS = {
    **{name.lower(): number for number, name in enumerate(_MONTHS, 1)},
    **{name[:3].lower(): number for number, name in enumerate(_MONTHS, 1)},
}
# Longest first, so that YYYY is not read as YY twice. `[text]` is a literal, as in
# moment.js ("YYYY-MM-DDTHH:mm:ss.SSS[Z]" ends with a letter Z, not an offset).
_FORMAT_TOKENS = re.compile(
    r"\[[^\]]*\]|YYYY|YY|MMMM|MMM|MM|M|Do|DDDD|DDD|DD|D|dddd|ddd|dd|d|HH|H|hh|h|mm|m|ss|s"
    r"|SSS|SS|S|A|a|ZZ|Z|X|x"
)
DEFAULT_OUTPUT_FORMAT = "YYYY-MM-DDTHH:mm:ssZ"  # moment.js's format() without a pattern


def _tokens(pattern: str) -> list[str]:
    """The pattern split into tokens and literal text."""
    parts: list[str] = []
    position = 0
    for match in _FORMAT_TOKENS.finditer(pattern):
        if match.start() > position:
            parts.append(pattern[position : match.start()])
        parts.append(match.group())
        position = match.end()
    if position < len(pattern):
        parts.append(pattern[position:])
    return parts


def _is_token(part: str) -> bool:
    return _FORMAT_TOKENS.fullmatch(part) is not None and not part.startswith("[")


def _ordinal(number: int) -> str:
    suffix = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"


def _offset(moment: datetime.datetime, separator: str) -> str:
    minutes = int((moment.utcoffset() or datetime.timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{separator}{minutes:02d}"


def format_date(moment: datetime.datetime, pattern: str) -> str:
    """`moment` written with moment.js tokens (English names)."""
    weekday = (moment.weekday() + 1) % 7  # moment.js counts from Sunday = 0
    hour12 = moment.hour % 12 or 12
    millisecond = moment.microsecond // 1000
    epoch_ms = (moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) // datetime.timedelta(
        milliseconds=1
    )
    values: dict[str, Callable[[], str]] = {
        "YYYY": lambda: f"{moment.year:04d}",
        "YY": lambda: f"{moment.year % 100:02d}",
        "MMMM": lambda: _MONTHS[moment.month - 1],
        "MMM": lambda: _MONTHS[moment.month - 1][:3],
        "MM": lambda: f"{moment.month:02d}",
        "M": lambda: str(moment.month),
        "Do": lambda: _ordinal(moment.day),
        "DDDD": lambda: f"{moment.timetuple().tm_yday:03d}",
        "DDD": lambda: str(moment.timetuple().tm_yday),
        "DD": lambda: f"{moment.day:02d}",
        "D": lambda: str(moment.day),
        "dddd": lambda: _WEEKDAYS[weekday],
        "ddd": lambda: _WEEKDAYS[weekday][:3],
        "dd": lambda: _WEEKDAYS[weekday][:2],
        "d": lambda: str(weekday),
        "HH": lambda: f"{moment.hour:02d}",
        "H": lambda: str(moment.hour),
        "hh": lambda: f"{hour12:02d}",
        "h": lambda: str(hour12),
        "mm": lambda: f"{moment.minute:02d}",
        "m": lambda: str(moment.minute),
        "ss": lambda: f"{moment.second:02d}",
        "s": lambda: str(moment.second),
        "SSS": lambda: f"{millisecond:03d}",
        "SS": lambda: f"{millisecond // 10:02d}",
        "S": lambda: str(millisecond // 100),
        "A": lambda: "AM" if moment.hour < 12 else "PM",
        "a": lambda: "am" if moment.hour < 12 else "pm",
        "ZZ": lambda: _offset(moment, ""),
        "Z": lambda: _offset(moment, ":"),
        "X": lambda: str(epoch_ms // 1000),
        "x": lambda: str(epoch_ms),
    }
    out: list[str] = []
    for part in _tokens(pattern):
        if part.startswith("["):
            out.append(part[1:-1])
        elif part in values:
            out.append(values[part]())
        else:
            out.append(part)
    return "".join(out)


# What each token reads when parsing (moment.js's forgiving mode: one or two digits for
# MM and DD, month names in any case, full or short).
_PARSE_PATTERNS = {
    "YYYY": r"\d{4}",
    "YY": r"\d{2}",
    "MMMM": r"[A-Za-z]+",
    "MMM": r"[A-Za-z]+",
    "MM": r"\d{1,2}",
    "M": r"\d{1,2}",
    "Do": r"\d{1,2}(?:st|nd|rd|th)",
    "DDDD": r"\d{1,3}",
    "DDD": r"\d{1,3}",
    "DD": r"\d{1,2}",
    "D": r"\d{1,2}",
    "dddd": r"[A-Za-z]+",
    "ddd": r"[A-Za-z]+",
    "dd": r"[A-Za-z]+",
    "d": r"\d",
    "HH": r"\d{1,2}",
    "H": r"\d{1,2}",
    "hh": r"\d{1,2}",
    "h": r"\d{1,2}",
    "mm": r"\d{1,2}",
    "m": r"\d{1,2}",
    "ss": r"\d{1,2}",
    "s": r"\d{1,2}",
    "SSS": r"\d{1,9}",
    "SS": r"\d{1,9}",
    "S": r"\d{1,9}",
    "A": r"[AaPp][Mm]",
    "a": r"[AaPp][Mm]",
    "ZZ": r"[Zz]|[+-]\d{2}:?\d{2}",
    "Z": r"[Zz]|[+-]\d{2}:?\d{2}",
    "X": r"-?\d+(?:\.\d+)?",
    "x": r"-?\d+",
}


@dataclass(frozen=True)
class DateParser:
    """A compiled input format."""

    pattern: str
    regex: re.Pattern[str]
    fields: tuple[str, ...]  # the symbol behind each group

    @classmethod
    def compile(cls, pattern: str) -> DateParser:
        regex = ""
        fields: list[str] = []
        for part in _tokens(pattern):
            if _is_token(part):
                regex += f"({_PARSE_PATTERNS[part]})"
                fields.append(part)
            else:
                regex += re.escape(part[1:-1] if part.startswith("[") else part)
        return cls(pattern, re.compile(regex), tuple(fields))

    def parse(self, text: str, now: datetime.datetime) -> datetime.datetime:
        match = self.regex.fullmatch(text.strip())
        if match is None:
            raise RecordFailed(f"{text!r} does not match the date format {self.pattern!r}")
        parts: dict[str, Any] = {}
        for symbol, found in zip(self.fields, match.groups(), strict=True):
            self._read(symbol, found, parts, text)
        if "epoch_ms" in parts:
            return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
                milliseconds=parts["epoch_ms"]
            )
        # Like moment.js: a format with no date part means today; otherwise the parts
        # not given start at their beginning (January, the 1st, midnight).
        has_date = any(key in parts for key in ("year", "month", "day", "day_of_year"))
        year = parts.get("year", now.year)
        month = parts.get("month", now.month if not has_date else 1)
        day = parts.get("day", now.day if not has_date else 1)
        hour = parts.get("hour", 0)
        if "meridiem" in parts:
            hour = hour % 12 + (12 if parts["meridiem"] == "pm" else 0)
        try:
            moment = datetime.datetime(
                year,
                month,
                day,
                hour,
                parts.get("minute", 0),
                parts.get("second", 0),
                parts.get("microsecond", 0),
                tzinfo=datetime.UTC,
            )
        except ValueError:
            raise RecordFailed(f"{text!r} is not a valid date") from None
        if "day_of_year" in parts:
            moment = moment.replace(month=1, day=1) + datetime.timedelta(
                days=parts["day_of_year"] - 1
            )
        return moment - parts.get("offset", datetime.timedelta())

    @staticmethod
    def _read(symbol: str, found: str, parts: dict[str, Any], text: str) -> None:
        if symbol == "YYYY":
            parts["year"] = int(found)
        elif symbol == "YY":
            # moment.js: 68 and below are 20xx, 69 and above 19xx.
            parts["year"] = int(found) + (2000 if int(found) <= 68 else 1900)
        elif symbol in ("MMMM", "MMM"):
            if found.lower() not in _MONTH_NUMBERS:
                raise RecordFailed(f"{found!r} in {text!r} is not a month name")
            parts["month"] = _MONTH_NUMBERS[found.lower()]
        elif symbol in ("MM", "M"):
            parts["month"] = int(found)
        elif symbol in ("DD", "D", "Do"):
            parts["day"] = int(re.match(r"\d+", found).group())  # type: ignore[union-attr]
        elif symbol in ("DDDD", "DDD"):
            parts["day_of_year"] = int(found)
        elif symbol in ("HH", "H", "hh", "h"):
            parts["hour"] = int(found)
        elif symbol in ("mm", "m"):
            parts["minute"] = int(found)
        elif symbol in ("ss", "s"):
            parts["second"] = int(found)
        elif symbol in ("SSS", "SS", "S"):
            parts["microsecond"] = int((found + "000000")[:6])
        elif symbol in ("A", "a"):
            parts["meridiem"] = found.lower()
        elif symbol in ("ZZ", "Z"):
            parts["offset"] = _parse_offset(found)
        elif symbol == "X":
            parts["epoch_ms"] = int(Decimal(found) * 1000)
        elif symbol == "x":
            parts["epoch_ms"] = int(found)
        # Weekday names and numbers are read and ignored, as moment.js does.


def _parse_offset(text: str) -> datetime.timedelta:
    if text in ("Z", "z"):
        return datetime.timedelta()
    digits = text[1:].replace(":", "")
    offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return -offset if text[0] == "-" else offset


def _parse_iso(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise RecordFailed(f"{text!r} is not an ISO 8601 date") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


# moment.js unit names and their aliases -> Tally's, largest first (the order `set`
# applies them in).
_UNITS = ("year", "month", "week", "date", "day", "hour", "minute", "second", "millisecond")
_UNIT_ALIASES = {
    **{unit: unit for unit in _UNITS},
    **{unit + "s": unit for unit in _UNITS},
    "y": "year",
    "M": "month",
    "w": "week",
    "D": "date",
    "d": "day",
    "h": "hour",
    "m": "minute",
    "s": "second",
    "ms": "millisecond",
}
_FIXED_UNITS = {
    "week": datetime.timedelta(weeks=1),
    "date": datetime.timedelta(days=1),
    "day": datetime.timedelta(days=1),
    "hour": datetime.timedelta(hours=1),
    "minute": datetime.timedelta(minutes=1),
    "second": datetime.timedelta(seconds=1),
    "millisecond": datetime.timedelta(milliseconds=1),
}


def _add_months(moment: datetime.datetime, months: int) -> datetime.datetime:
    # Like moment.js, the day is kept where the target month has it, else clamped
    # (31 January + 1 month = 28 or 29 February).
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _set_unit(moment: datetime.datetime, unit: str, value: int) -> datetime.datetime:
    """moment.js `set`: a value beyond the unit's range carries into the next one
    (hour 24 is midnight the next day). `month` counts from 0, `date` is the day of the
    month and `day` the day of the week from Sunday = 0, as in moment.js."""
    if unit == "year":
        return _add_months(moment, (value - moment.year) * 12)
    if unit == "month":
        return _add_months(moment, value - (moment.month - 1))
    if unit == "week":
        raise ConfigurationError("the week cannot be set, only added or subtracted")
    if unit == "date":
        return moment.replace(day=1) + (value - 1) * _FIXED_UNITS["date"]
    if unit == "day":
        return moment + (value - (moment.weekday() + 1) % 7) * _FIXED_UNITS["day"]
    if unit == "millisecond":
        return moment.replace(microsecond=0) + value * _FIXED_UNITS["millisecond"]
    return moment.replace(**{unit: 0}) + value * _FIXED_UNITS[unit]


def _shift(moment: datetime.datetime, unit: str, amount: int) -> datetime.datetime:
    if unit == "year":
        return _add_months(moment, 12 * amount)
    if unit == "month":
        return _add_months(moment, amount)
    return moment + amount * _FIXED_UNITS[unit]


@dataclass(frozen=True)
class _DateItem:
    field: str
    path: tuple
    parser: DateParser | None  # None: ISO 8601 text or epoch milliseconds
    operations: tuple[tuple[str, str, int], ...]  # (unit, mode, value)
    output_format: str


@function("transforms/date")
class DateTransform(_Configured):
    """Parses, changes and reformats date fields (UTC, moment.js tokens)."""

    def configure(self) -> None:
        self.items: list[_DateItem] = []
        for index, item in enumerate(self.params.get("items") or []):
            where = f"items[{index}]"
            mode = item.get("mode")
            if mode != "modify":
                raise ConfigurationError(f"{where}: unsupported mode {mode!r} (known: modify)")
            field = item.get("field")
            if not isinstance(field, str) or not field:
                raise ConfigurationError(f"{where}: field is missing")
            input_format = item.get("inputFormat") or ""
            self.items.append(
                _DateItem(
                    field=field,
                    path=parse_path(field),
                    parser=DateParser.compile(input_format) if input_format else None,
                    operations=self._operations(item.get("operation") or {}, where),
                    output_format=item.get("outputFormat") or DEFAULT_OUTPUT_FORMAT,
                )
            )

    @staticmethod
    def _operations(operations: dict[str, Any], where: str) -> tuple[tuple[str, str, int], ...]:
        planned: list[tuple[str, str, int]] = []
        for name, operation in operations.items():
            unit = _UNIT_ALIASES.get(name)
            if unit is None:
                raise ConfigurationError(f"{where}: unknown unit {name!r}")
            mode = (operation or {}).get("mode")
            value = (operation or {}).get("value")
            if mode not in ("set", "add", "subtract"):
                raise ConfigurationError(f"{where}.{name}: mode must be set, add or subtract")
            number = to_number(value)
            if not isinstance(number, int):
                raise ConfigurationError(f"{where}.{name}: value must be a whole number")
            if mode == "set" and unit == "week":
                raise ConfigurationError(f"{where}: the week cannot be set, only added")
            planned.append((unit, mode, number))
        planned.sort(key=lambda step: _UNITS.index(step[0]))
        return tuple(planned)

    def transform(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        record = payload
        for item in self.items:
            value = get_path(record, item.path, MISSING)
            if value is MISSING or value is None:
                raise RecordFailed(f"transforms/date: {item.field} is missing")
            moment = self._read(item, value)
            for unit, mode, number in item.operations:
                if mode == "set":
                    moment = _set_unit(moment, unit, number)
                else:
                    moment = _shift(moment, unit, number if mode == "add" else -number)
            record = assign_path(record, item.path, format_date(moment, item.output_format))
        return [(None, record)]

    def _read(self, item: _DateItem, value: Any) -> datetime.datetime:
        if item.parser is not None:
            return item.parser.parse(to_text(value), self.ctx.now)
        if is_number(value):  # as moment(number): milliseconds since the epoch
            return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
                milliseconds=int(value)
            )
        if isinstance(value, str):
            return _parse_iso(value)
        raise RecordFailed(f"transforms/date: {item.field} is not a date but {to_text(value)!r}")
