"""Reading and writing a record by path, templates, and the expression map's formulas.

Three small languages appear in stream params, all over a record's JSON (a dict whose
numbers are int or Decimal):

Paths — `customFields.brand`, `items.0.sku`, `items[0].sku`, `meta["odd.key"]`.
    Segments are separated by dots; a segment of digits indexes a list (and names a key
    of an object, as JSON keys are text); brackets hold an index or a quoted key, for
    keys that contain dots or brackets. The empty path is the record itself.

Templates — text with references: `${payload.a.b}` and `@{payload.a.b}` (both spellings
    occur in real exports), e.g. `.../meters/${payload.meter.id}`. The reference
    product documents `@{}` as keeping the value's type and `${}` as giving text. Tally
    settles it like this:

    * a template that is exactly one reference, of either spelling, gives the
      referenced value with its type (an object stays an object, a number a number);
      a missing path gives None. Every consumer either wants the value (a split key
      compared with a number, a request body) or makes text of it itself;
    * anything else is text: each reference is replaced by its text (`to_text`) and a
      missing path by the empty string. (The reference product, being JavaScript,
      writes "undefined" there; an empty string is what a URL or message wants.)

    Only the `payload` scope exists in Tally; `${}` and `${payload}` mean the whole
    record. The reference product's `meta` and `sharedStore` scopes, and references
    nested inside references, are refused with a clear error.

Expressions — the formulas of `transforms/xmap`, e.g.
    `"Hi dear " + @{payload.name} + "!"` or
    `round(100 * @{payload.view_duration} / @{payload.full_duration})`:
    double-quoted string literals (single quotes are not accepted, as in the reference
    product), numbers, `true`/`false`/`null`, references (`@{}` keeps the type, `${}`
    gives text, as documented), `+ - * /` with the usual precedence, unary minus,
    parentheses and a few functions (`FUNCTIONS`). `+` adds two numbers and otherwise
    joins text when one side is text (a null side joins as ""); `- * /` take numbers or
    numeric text. Arithmetic is exact (Decimal); a whole result comes back as int.

Malformed paths, templates and expressions raise `PathError`, `TemplateError` and
`ExpressionError` (all ValueErrors) with the offending text and position; an expression
that cannot be computed for one record raises `EvaluationError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from common import json as tally_json


class PathError(ValueError):
    """A path that cannot be parsed, or written through."""


class TemplateError(ValueError):
    """A template with a malformed or unsupported reference."""


class ExpressionError(ValueError):
    """An expression that cannot be parsed."""


class EvaluationError(ValueError):
    """An expression that cannot be computed for this record."""


class _Missing:
    """What `get_path` finds where a record has nothing (unlike a JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

Segment = str | int
Path = tuple[Segment, ...]

# --- Paths -----------------------------------------------------------------------------------

_NAME = re.compile(r"[^.\[\]]+")


@lru_cache(maxsize=2048)
def parse_path(text: str) -> Path:
    """`items[0].sku` -> ("items", 0, "sku"). Raises PathError for an empty segment
    (`a..b`, `a.`), an unclosed or empty bracket, or a stray `]`."""
    segments: list[Segment] = []
    position = 0
    length = len(text)
    while position < length:
        if text[position] == "[":
            close = text.find("]", position)
            if close == -1:
                raise PathError(f"unclosed '[' at position {position} in path {text!r}")
            segments.append(_bracket_segment(text[position + 1 : close].strip(), text))
            position = close + 1
        else:
            match = _NAME.match(text, position)
            if match is None:
                raise PathError(f"empty segment at position {position} in path {text!r}")
            segments.append(match.group())
            position = match.end()
        if position < length:
            if text[position] == ".":
                position += 1
                if position == length:
                    raise PathError(f"path {text!r} ends with '.'")
            elif text[position] != "[":
                raise PathError(f"unexpected {text[position]!r} at position {position} in {text!r}")
    return tuple(segments)


def _bracket_segment(inner: str, text: str) -> Segment:
    if inner.isdigit():
        return int(inner)
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
        return inner[1:-1]
    raise PathError(f"brackets hold an index or a quoted key, not {inner!r}, in path {text!r}")


def _as_path(path: str | Path) -> Path:
    return parse_path(path) if isinstance(path, str) else path


def _list_index(segment: Segment) -> int | None:
    if isinstance(segment, int):
        return segment
    return int(segment) if segment.isdigit() else None


def get_path(data: Any, path: str | Path, default: Any = None) -> Any:
    """The value at `path` in `data`, or `default` where there is none. A JSON null that
    is present is returned as None; pass `default=MISSING` to tell the two apart."""
    current = data
    for segment in _as_path(path):
        if isinstance(current, dict):
            key = segment if isinstance(segment, str) else str(segment)
            if key not in current:
                return default
            current = current[key]
        elif isinstance(current, list):
            index = _list_index(segment)
            if index is None or index >= len(current):
                return default
            current = current[index]
        else:
            return default
    return current


def assign_path(data: Any, path: str | Path, value: Any) -> Any:
    """A copy of `data` with `value` at `path`; `data` itself is left untouched.

    Only the objects and lists along the path are copied (the rest is shared), which is
    what lets the engine hand one payload to two branches. Missing objects on the way
    are created, and so is one where a scalar stood (as JavaScript's `_.set` does); a
    list can only be written at an index it already has.
    """
    segments = _as_path(path)
    return _assign(data, segments, value) if segments else value


def _assign(container: Any, segments: Path, value: Any) -> Any:
    head, rest = segments[0], segments[1:]
    if isinstance(container, list):
        index = _list_index(head)
        if index is None or index >= len(container):
            raise PathError(f"cannot write {head!r} in a list of {len(container)} items")
        copied_list = list(container)
        copied_list[index] = _assign(copied_list[index], rest, value) if rest else value
        return copied_list
    copied = dict(container) if isinstance(container, dict) else {}
    key = head if isinstance(head, str) else str(head)
    copied[key] = _assign(copied.get(key), rest, value) if rest else value
    return copied


def format_path(segments: Path) -> str:
    """The inverse of `parse_path`, for messages: ("items", 0, "sku") -> `items[0].sku`."""
    text = ""
    for segment in segments:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _NAME.fullmatch(segment):
            text += f".{segment}" if text else segment
        else:
            text += '["' + segment + '"]'
    return text


# --- Values as text --------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """int or Decimal (or a stray float), but not a bool, which Python counts as an int."""
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def number_text(value: int | Decimal | float) -> str:
    """A number as JavaScript would print it: 3 for Decimal("3.00"), 1.5 for "1.50",
    never an exponent."""
    if isinstance(value, Decimal):
        return str(tally_json.normalize_decimal(value)) if value.is_finite() else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_text(value: Any) -> str:
    """How a value is written into text: strings as they are, numbers without trailing
    zeros, true/false, "" for null or missing, and objects and lists as compact JSON
    (not JavaScript's "[object Object]", as the reference product documents)."""
    if value is None or value is MISSING:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return number_text(value)
    if isinstance(value, dict | list):
        return tally_json.dumps_text(value)
    return str(value)


def to_number(value: Any) -> int | Decimal | None:
    """The number a value stands for: numbers themselves and numeric text ("21", " 2.5 ");
    None for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value.strip()):
        number = Decimal(value.strip())
        return int(number) if number == number.to_integral_value() and "." not in value else number
    return None


_NUMERIC_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


# --- Templates -------------------------------------------------------------------------------

_REFERENCE_START = re.compile(r"[$@]\{")


@dataclass(frozen=True)
class Reference:
    """`${payload.a}` or `@{payload.a}`: `typed` is True for the `@` spelling."""

    source: str  # as written, for messages
    typed: bool
    path: Path  # below `payload`

    def lookup(self, payload: Any) -> Any:
        """The referenced value, or MISSING."""
        return get_path(payload, self.path, MISSING)


def parse_reference(source: str) -> Reference:
    """`${payload.a.b}` / `@{payload.a.b}` / `${}` -> Reference. Raises TemplateError."""
    if len(source) < 3 or source[0] not in "$@" or source[1] != "{" or source[-1] != "}":
        raise TemplateError(f"{source!r} is not a reference like ${{payload.field}}")
    inner = source[2:-1].strip()
    if "{" in inner or "}" in inner:
        raise TemplateError(f"nested references are not supported: {source!r}")
    try:
        segments = parse_path(inner)
    except PathError as exc:
        raise TemplateError(f"bad path in {source!r}: {exc}") from None
    if segments and segments[0] != "payload":
        raise TemplateError(
            f"{source!r}: only the payload scope is available, as in ${{payload.field}}"
        )
    return Reference(source=source, typed=source[0] == "@", path=segments[1:])


@dataclass(frozen=True)
class Template:
    """A compiled template: literal text and references, in order."""

    source: str
    parts: tuple[str | Reference, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(part for part in self.parts if isinstance(part, Reference))

    def render(self, payload: Any) -> Any:
        """The typed value for a template that is one reference (None if missing),
        otherwise the text with every reference filled in."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Reference):
            value = self.parts[0].lookup(payload)
            return None if value is MISSING else value
        return self.render_text(payload)

    def render_text(self, payload: Any) -> str:
        """Always text, for places that only take text (a URL, a query parameter)."""
        return "".join(
            part if isinstance(part, str) else to_text(part.lookup(payload)) for part in self.parts
        )


@lru_cache(maxsize=1024)
def compile_template(source: str) -> Template:
    """Parse once, render per record. Raises TemplateError for an unclosed `${`, a
    reference outside the payload scope or a nested one."""
    parts: list[str | Reference] = []
    position = 0
    for start in _REFERENCE_START.finditer(source):
        if start.start() < position:  # inside a reference already consumed
            continue
        close = source.find("}", start.end())
        if close == -1:
            raise TemplateError(f"unclosed reference at position {start.start()} in {source!r}")
        if start.start() > position:
            parts.append(source[position : start.start()])
        parts.append(parse_reference(source[start.start() : close + 1]))
        position = close + 1
    if position < len(source) or not parts:
        parts.append(source[position:])
    return Template(source=source, parts=tuple(parts))


def render_template(source: str, payload: Any) -> Any:
    """Shorthand for `compile_template(source).render(payload)`."""
    return compile_template(source).render(payload)


# --- Expressions -----------------------------------------------------------------------------


def tidy_number(number: int | Decimal) -> int | Decimal:
    """A whole Decimal becomes an int, so 100 * 4 / 2 gives 200, not Decimal("200")."""
    if isinstance(number, Decimal) and number.is_finite() and number == number.to_integral_value():
        return int(number)
    return number


def _js_round(number: Decimal, places: int = 0) -> int | Decimal:
    # Math.round rounds halves up, towards +infinity (-2.5 -> -2), unlike Python's
    # banker's rounding: floor(x + 0.5) says exactly that.
    step = Decimal(1).scaleb(-places)
    halved = (number / step + Decimal("0.5")).to_integral_value(ROUND_FLOOR)
    return tidy_number(halved * step)


def _one_number(name: str, args: list[Any]) -> Decimal:
    number = to_number(args[0])
    if number is None:
        raise EvaluationError(f"{name}() needs a number, got {_describe(args[0])}")
    return Decimal(number)


def _round(args: list[Any]) -> Any:
    places = 0
    if len(args) == 2:
        places_number = to_number(args[1])
        if not isinstance(places_number, int):
            raise EvaluationError(f"round() takes whole decimal places, got {_describe(args[1])}")
        places = places_number
    return _js_round(_one_number("round", args), places)


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[[list[Any]], Any]:
    def apply(args: list[Any]) -> Any:
        numbers = [to_number(arg) for arg in args]
        if any(number is None for number in numbers):
            raise EvaluationError(f"{name}() needs numbers, got {', '.join(map(_describe, args))}")
        return pick(numbers)

    return apply


# name -> (fewest arguments, most arguments or None for any number, implementation)
FUNCTIONS: dict[str, tuple[int, int | None, Callable[[list[Any]], Any]]] = {
    "round": (1, 2, _round),
    "floor": (1, 1, lambda a: tidy_number(_one_number("floor", a).to_integral_value(ROUND_FLOOR))),
    "ceil": (1, 1, lambda a: tidy_number(_one_number("ceil", a).to_integral_value(ROUND_CEILING))),
    "abs": (1, 1, lambda a: tidy_number(abs(_one_number("abs", a)))),
    "min": (1, None, _extreme("min", min)),
    "max": (1, None, _extreme("max", max)),
    "lower": (1, 1, lambda a: to_text(a[0]).lower()),
    "upper": (1, 1, lambda a: to_text(a[0]).upper()),
    "trim": (1, 1, lambda a: to_text(a[0]).strip()),
    "string": (1, 1, lambda a: to_text(a[0])),
    "number": (1, 1, lambda a: tidy_number(_one_number("number", a))),
}


def _describe(value: Any) -> str:
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    return to_text(value)


class _Node:
    source: str

    def evaluate(self, payload: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Literal(_Node):
    source: str
    value: Any

    def evaluate(self, payload: Any) -> Any:
        return self.value


@dataclass(frozen=True)
class _ReferenceNode(_Node):
    source: str
    reference: Reference

    def evaluate(self, payload: Any) -> Any:
        value = self.reference.lookup(payload)
        if not self.reference.typed:
            return to_text(value)
        return None if value is MISSING else value


@dataclass(frozen=True)
class _Negate(_Node):
    source: str
    operand: _Node

    def evaluate(self, payload: Any) -> Any:
        value = self.operand.evaluate(payload)
        number = to_number(value)
        if number is None:
            raise EvaluationError(f"cannot negate {_describe(value)} from {self.operand.source}")
        return tidy_number(-number)


@dataclass(frozen=True)
class _Binary(_Node):
    source: str
    operator: str
    left: _Node
    right: _Node

    def evaluate(self, payload: Any) -> Any:
        left = self.left.evaluate(payload)
        right = self.right.evaluate(payload)
        if self.operator == "+":
            if is_number(left) and is_number(right):
                return tidy_number(Decimal(to_number(left)) + Decimal(to_number(right)))
            if isinstance(left, str) or isinstance(right, str):
                return to_text(left) + to_text(right)
        left_number, right_number = to_number(left), to_number(right)
        for value, number, node in (
            (left, left_number, self.left),
            (right, right_number, self.right),
        ):
            if number is None:
                raise EvaluationError(
                    f"'{self.operator}' needs numbers{' or text' if self.operator == '+' else ''}, "
                    f"got {_describe(value)} from {node.source}"
                )
        assert left_number is not None and right_number is not None
        try:
            if self.operator == "+":
                result = Decimal(left_number) + right_number
            elif self.operator == "-":
                result = Decimal(left_number) - right_number
            elif self.operator == "*":
                result = Decimal(left_number) * right_number
            else:
                result = Decimal(left_number) / right_number
        except (ZeroDivisionError, InvalidOperation):
            raise EvaluationError(f"division by zero in {self.source}") from None
        return tidy_number(result)


@dataclass(frozen=True)
class _Call(_Node):
    source: str
    name: str
    arguments: tuple[_Node, ...]

    def evaluate(self, payload: Any) -> Any:
        implementation = FUNCTIONS[self.name][2]
        return implementation([argument.evaluate(payload) for argument in self.arguments])


@dataclass(frozen=True)
class _Token:
    kind: str  # "string" | "number" | "reference" | "name" | "op" | "end"
    text: str
    position: int
    value: Any = None


_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r"}


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        char = source[position]
        if char.isspace():
            position += 1
        elif char == '"':
            text, end = _read_string(source, position)
            tokens.append(_Token("string", source[position:end], position, text))
            position = end
        elif char == "'":
            raise ExpressionError(
                f"string literals take double quotes, not single (position {position} "
                f"in {source!r})"
            )
        elif char in "$@" and source.startswith("{", position + 1):
            close = source.find("}", position)
            if close == -1:
                raise ExpressionError(f"unclosed reference at position {position} in {source!r}")
            text = source[position : close + 1]
            try:
                reference = parse_reference(text)
            except TemplateError as exc:
                raise ExpressionError(f"{exc} (position {position})") from None
            tokens.append(_Token("reference", text, position, reference))
            position = close + 1
        elif number := _NUMBER.match(source, position):
            digits = number.group()
            value = int(digits) if digits.isdigit() else tidy_number(Decimal(digits))
            tokens.append(_Token("number", digits, position, value))
            position = number.end()
        elif name := _IDENTIFIER.match(source, position):
            if source.startswith(".", name.end()):  # payload.a written without @{...}
                dotted = re.match(r"[\w.\[\]]+", source[position:]).group()  # type: ignore[union-attr]
                raise ExpressionError(
                    f"bare field {dotted!r} at position {position} in {source!r}: "
                    f"reference fields as @{{{dotted}}}"
                )
            tokens.append(_Token("name", name.group(), position))
            position = name.end()
        elif char in "+-*/(),":
            tokens.append(_Token("op", char, position))
            position += 1
        else:
            raise ExpressionError(f"unexpected {char!r} at position {position} in {source!r}")
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _read_string(source: str, start: int) -> tuple[str, int]:
    chars: list[str] = []
    position = start + 1
    while position < len(source):
        char = source[position]
        if char == '"':
            return "".join(chars), position + 1
        if char == "\\":
            escaped = source[position + 1 : position + 2]
            if escaped not in _ESCAPES:
                raise ExpressionError(
                    f"unknown escape '\\{escaped}' at position {position} in {source!r}"
                )
            chars.append(_ESCAPES[escaped])
            position += 2
        else:
            chars.append(char)
            position += 1
    raise ExpressionError(f"unclosed string starting at position {start} in {source!r}")


class _Parser:
    """Recursive descent, one method per precedence level:

    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := number | string | reference | true | false | null
                | name "(" [expression ("," expression)*] ")" | "(" expression ")"
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, message: str, token: _Token | None = None) -> ExpressionError:
        token = token or self.current
        where = "the end" if token.kind == "end" else f"position {token.position}"
        return ExpressionError(f"{message} at {where} in {self.source!r}")

    def span(self, start: int) -> str:
        end = self.tokens[self.index - 1]
        return self.source[start : end.position + len(end.text)].strip()

    def parse(self) -> _Node:
        if self.current.kind == "end":
            raise ExpressionError("empty expression")
        node = self.expression()
        if self.current.kind != "end":
            raise self.fail(f"unexpected {self.current.text!r}")
        return node

    def expression(self) -> _Node:
        start = self.current.position
        node = self.term()
        while self.current.kind == "op" and self.current.text in "+-":
            operator = self.advance().text
            right = self.term()
            node = _Binary(self.span(start), operator, node, right)
        return node

    def term(self) -> _Node:
        start = self.current.position
        node = self.unary()
        while self.current.kind == "op" and self.current.text in "*/":
            operator = self.advance().text
            right = self.unary()
            node = _Binary(self.span(start), operator, node, right)
        return node

    def unary(self) -> _Node:
        if self.current.kind == "op" and self.current.text == "-":
            start = self.advance().position
            operand = self.unary()
            return _Negate(self.span(start), operand)
        return self.primary()

    def primary(self) -> _Node:
        token = self.advance()
        if token.kind in ("number", "string"):
            return _Literal(token.text, token.value)
        if token.kind == "reference":
            return _ReferenceNode(token.text, token.value)
        if token.kind == "name":
            constants = {"true": True, "false": False, "null": None}
            if token.text in constants:
                return _Literal(token.text, constants[token.text])
            return self.call(token)
        if token.kind == "op" and token.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "end":
            raise self.fail("expression ends too early", token)
        raise self.fail(f"unexpected {token.text!r}", token)

    def call(self, name: _Token) -> _Node:
        if name.text not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.fail(f"unknown function or bare word {name.text!r} (known: {known})", name)
        self.expect("(")
        arguments: list[_Node] = []
        if not (self.current.kind == "op" and self.current.text == ")"):
            arguments.append(self.expression())
            while self.current.kind == "op" and self.current.text == ",":
                self.advance()
                arguments.append(self.expression())
        self.expect(")")
        fewest, most, _ = FUNCTIONS[name.text]
        if len(arguments) < fewest or (most is not None and len(arguments) > most):
            wanted = str(fewest) if fewest == most else f"{fewest}-{most or 'any'}"
            raise self.fail(f"{name.text}() takes {wanted} argument(s), got {len(arguments)}", name)
        return _Call(self.span(name.position), name.text, tuple(arguments))

    def expect(self, text: str) -> None:
        if not (self.current.kind == "op" and self.current.text == text):
            found = "the end" if self.current.kind == "end" else repr(self.current.text)
            raise self.fail(f"expected {text!r}, found {found}")
        self.advance()


@dataclass(frozen=True)
class Expression:
    """A compiled expression; `evaluate` computes it over one record."""

    source: str
    root: _Node

    def evaluate(self, payload: Any) -> Any:
        return self.root.evaluate(payload)


@lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Parse an expression once. Raises ExpressionError, naming the position."""
    return Expression(source=source, root=_Parser(source).parse())
