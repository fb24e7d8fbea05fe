"""Paths, templates and expressions (streams/runtime/paths.py), with the templates and
expressions of the reference product's real exports."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from streams.runtime.paths import (
    MISSING,
    EvaluationError,
    ExpressionError,
    PathError,
    TemplateError,
    assign_path,
    compile_expression,
    compile_template,
    format_path,
    get_path,
    parse_path,
    render_template,
    to_number,
    to_text,
)

FIXTURES = Path(__file__).resolve().parents[4] / "shared/fixtures/usage-engine-streams"


def fixture_params(export: str, name: str) -> dict:
    nodes = json.loads((FIXTURES / export).read_text())["nodes"]
    return copy.deepcopy(next(node for node in nodes if node["name"] == name)["params"])


# --- Paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", ()),
        ("value", ("value",)),
        ("customFields.brand", ("customFields", "brand")),
        ("items.0.sku", ("items", "0", "sku")),
        ("items[0].sku", ("items", 0, "sku")),
        ('meta["odd.key"]', ("meta", "odd.key")),
        ("meta['odd.key'][2]", ("meta", "odd.key", 2)),
        ("my field", ("my field",)),
    ],
)
def test_parse_path_reads_dots_indexes_and_quoted_keys(text, segments):
    assert parse_path(text) == segments


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "ends with '.'"),
        ("a[0", "unclosed '['"),
        ("a[]", "brackets hold an index or a quoted key"),
        ("a[x]", "brackets hold an index or a quoted key"),
        ("a]b", "unexpected ']'"),
        ("a[0]b", "unexpected 'b'"),
    ],
)
def test_parse_path_rejects_malformed_paths(text, problem):
    with pytest.raises(PathError, match=problem.replace("[", r"\[")):
        parse_path(text)


def test_format_path_is_the_inverse_of_parse_path():
    assert format_path(("items", 0, "sku")) == "items[0].sku"
    assert format_path(("meta", "odd.key")) == 'meta["odd.key"]'
    assert parse_path(format_path(("items", 0, "sku"))) == ("items", 0, "sku")


def test_get_path_reads_nested_objects_and_lists():
    record = {"customFields": {"brand": "HP"}, "items": [{"sku": "a"}, {"sku": "b"}]}
    assert get_path(record, "customFields.brand") == "HP"
    assert get_path(record, "items.1.sku") == "b"
    assert get_path(record, "items[0].sku") == "a"
    assert get_path(record, "") is record


def test_get_path_gives_the_default_where_the_record_has_nothing():
    record = {"a": {"b": None}, "items": [1], "n": 5}
    assert get_path(record, "a.c") is None
    assert get_path(record, "a.c", "none") == "none"
    assert get_path(record, "items.3") is None  # beyond the list
    assert get_path(record, "items.x") is None  # not an index
    assert get_path(record, "n.x") is None  # through a number
    # A JSON null that is there is not the same as nothing.
    assert get_path(record, "a.b", MISSING) is None
    assert get_path(record, "a.c", MISSING) is MISSING


def test_get_path_reads_a_digit_key_of_an_object():
    assert get_path({"codes": {"0": "zero"}}, "codes[0]") == "zero"


def test_assign_path_creates_objects_and_leaves_the_input_untouched():
    record = {"a": {"keep": [1, 2]}, "other": {"x": 1}}
    before = copy.deepcopy(record)
    written = assign_path(record, "a.b.c", Decimal("1.5"))
    assert written == {"a": {"keep": [1, 2], "b": {"c": Decimal("1.5")}}, "other": {"x": 1}}
    assert record == before
    # Only the objects along the path are copied; the rest is shared.
    assert written["other"] is record["other"]
    assert written["a"] is not record["a"]


def test_assign_path_writes_list_items_it_has_and_refuses_others():
    record = {"items": [{"sku": "a"}]}
    assert assign_path(record, "items.0.sku", "b") == {"items": [{"sku": "b"}]}
    assert record == {"items": [{"sku": "a"}]}
    with pytest.raises(PathError, match="cannot write 3 in a list of 1 items"):
        assign_path(record, "items[3]", "x")
    with pytest.raises(PathError, match="cannot write 'x'"):
        assign_path(record, "items.x", 1)


def test_assign_path_replaces_a_scalar_on_the_way_and_the_root_path_replaces_all():
    assert assign_path({"a": 5}, "a.b", 1) == {"a": {"b": 1}}
    assert assign_path(None, "a", 1) == {"a": 1}
    assert assign_path({"a": 1}, "", {"b": 2}) == {"b": 2}


# --- Values as text and numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("text", "text"),
        (None, ""),
        (MISSING, ""),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (Decimal("1.50"), "1.5"),
        (Decimal("3.00"), "3"),
        (Decimal("1E+3"), "1000"),
        ({"a": Decimal("1.50"), "b": [1, None]}, '{"a":1.50,"b":[1,null]}'),
    ],
)
def test_to_text(value, text):
    assert to_text(value) == text


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (15, 15),
        (Decimal("2.5"), Decimal("2.5")),
        ("21", 21),
        (" 2.50 ", Decimal("2.50")),
        ("-3", -3),
        ("1e3", 1000),
        ("abc", None),
        ("", None),
        (True, None),
        (None, None),
        ([1], None),
    ],
)
def test_to_number_reads_numbers_and_numeric_text_only(value, number):
    result = to_number(value)
    assert result == number
    assert type(result) is type(number)


# --- Templates -------------------------------------------------------------------------------


def test_a_template_of_one_reference_keeps_the_value_and_its_type():
    record = {"meter": {"id": "m-1", "value": Decimal("2.5")}, "printerId": 101}
    assert render_template("${payload.printerId}", record) == 101
    assert render_template("@{payload.meter}", record) == record["meter"]
    assert render_template("${payload.meter}", record) == record["meter"]
    assert render_template("@{payload.meter.value}", record) == Decimal("2.5")
    assert render_template("${ payload.meter.id }", record) == "m-1"


def test_a_template_of_one_missing_reference_gives_none():
    assert render_template("@{payload.thresholdReached.customFields.action}", {}) is None
    assert render_template("${payload.nothing}", {"a": 1}) is None


def test_the_whole_record_is_referenced_by_payload_or_nothing():
    record = {"a": 1}
    assert render_template("${}", record) is record
    assert render_template("${payload}", record) is record
    assert render_template("@{payload}", record) is record


def test_a_template_with_text_interpolates_each_reference_as_text():
    record = {"meter": {"id": "m-1"}, "n": Decimal("1.50"), "ok": True, "obj": {"a": 1}}
    uri = fixture_params("purge-meters.json", "Delete Meter API")["uri"]
    assert uri.endswith("/meters/${payload.meter.id}")
    assert compile_template(uri).render(record).endswith("/meters/m-1")
    assert render_template("n=${payload.n} ok=@{payload.ok} obj=${payload.obj}", record) == (
        'n=1.5 ok=true obj={"a":1}'
    )


def test_missing_paths_interpolate_as_empty_text():
    assert render_template("id-${payload.a}-@{payload.b.c}-", {"b": None}) == "id---"


def test_render_text_always_gives_text():
    template = compile_template("${payload.printerId}")
    assert template.render_text({"printerId": 101}) == "101"
    assert template.render_text({}) == ""


def test_text_without_references_is_returned_as_written():
    assert render_template("plain $ and @ and {braces}", {}) == "plain $ and @ and {braces}"
    assert render_template("", {}) == ""
    assert compile_template("a ${payload.x} b").references[0].path == ("x",)


def test_real_templates_of_the_exports_render():
    dedupe = fixture_params("printing-as-a-service-with-metering.json", "Deduplicate 1")
    route = fixture_params("printing-as-a-service-with-metering.json", "Route")
    record = {"eventId": "101_2024", "thresholdReached": {"customFields": {"action": "EMAIL"}}}
    assert render_template(dedupe["key"], record) == "101_2024"
    assert render_template(route["rules"][0]["key"], record) == "EMAIL"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("${payload.a", "unclosed reference"),
        ("x ${meta.fileName}", "only the payload scope"),
        ("${sharedStore.key}", "only the payload scope"),
        ("@{payload.all[${payload.key}]}", "nested references are not supported"),
        ("${payload..a}", "bad path"),
    ],
)
def test_malformed_templates_are_refused(source, problem):
    with pytest.raises(TemplateError, match=problem):
        compile_template(source)


# --- Expressions -----------------------------------------------------------------------------

VIEW = {
    "user_id": 1,
    "name": "John Doe",
    "email": "john@doe.com",
    "country": "Syldavia",
    "birth_year": 1980,
    "view_duration": 4250,
    "full_duration": 7300,
    "nudge_msg": "Enjoy.",
    "metrics_msg": "You watched 3 movies.",
}


def xmap_expression(name: str, field: str) -> str:
    mappings = fixture_params("cultflicks-video-streaming.json", name)["mappings"]
    return next(mapping["expression"] for mapping in mappings if mapping["field"] == field)


def test_the_view_percent_formula_of_the_export():
    expression = compile_expression(xmap_expression("Calculate view percent", "view_percent"))
    # 100 * 4250 / 7300 = 58.2...; Math.round gives 58.
    assert expression.evaluate(VIEW) == 58
    assert expression.evaluate({"view_duration": 7200, "full_duration": 7200}) == 100


def test_the_email_message_formula_of_the_export():
    subject = compile_expression(xmap_expression("Format email message", "subject"))
    message = compile_expression(xmap_expression("Format email message", "message"))
    assert subject.evaluate(VIEW) == "Thank you for using Cultflicks!"
    assert message.evaluate(VIEW) == (
        "Hi dear John Doe, Your email is john@doe.com, your country is Syldavia, and you "
        "were born on 1980. Enjoy. You watched 3 movies.  Best regards, Cultflicks"
    )


@pytest.mark.parametrize(
    ("source", "result"),
    [
        ('"text"', "text"),
        ('"say \\"hi\\"\\n"', 'say "hi"\n'),
        ("42", 42),
        ("2.50", Decimal("2.50")),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("8 / 2 / 2", 2),
        ("1 / 4", Decimal("0.25")),
        ("0.1 + 0.2", Decimal("0.3")),
        ("-3 + 1", -2),
        ("-(2 * 3)", -6),
        ("@{payload.n} + 1", 6),
        ("${payload.n} + 1", "51"),  # ${} gives text, so + joins
        ('"n=" + @{payload.n}', "n=5"),
        ('@{payload.n} + "%"', "5%"),
        ("@{payload.text} * 2", 42),  # numeric text counts as a number for * - /
        ('"a" + @{payload.missing} + "b"', "ab"),
        ('"obj " + @{payload.obj}', 'obj {"k":[1,2]}'),
        ("@{payload.obj}", {"k": [1, 2]}),
        ("@{payload.missing}", None),
        ("${payload.missing}", ""),
        ("true", True),
        ("null", None),
        ("round(2.5)", 3),
        ("round(-2.5)", -2),  # Math.round: halves go up
        ("round(2.345, 2)", Decimal("2.35")),
        ("floor(-1.5)", -2),
        ("ceil(1.2)", 2),
        ("abs(-4)", 4),
        ("min(3, @{payload.n}, 9)", 3),
        ("max(3, @{payload.text}, 9)", 21),
        ('upper("ab") + lower("CD") + trim("  e ")', "ABcde"),
        ('string(@{payload.n}) + number("2")', "52"),
    ],
)
def test_expressions_evaluate(source, result):
    record = {"n": 5, "text": "21", "obj": {"k": [1, 2]}}
    value = compile_expression(source).evaluate(record)
    assert value == result
    assert type(value) is type(result)


def test_expressions_never_write_to_the_record():
    record = {"obj": {"k": [1]}}
    compile_expression('"x" + @{payload.obj} + round(@{payload.obj.k.0})').evaluate(record)
    assert record == {"obj": {"k": [1]}}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("", "empty expression"),
        ('"abc', "unclosed string starting at position 0"),
        ("'abc'", "string literals take double quotes"),
        ('"\\q"', "unknown escape"),
        ("1 +", "expression ends too early at the end"),
        ("1 2", "unexpected '2' at position 2"),
        ("(1 + 2", "expected '\\)', found the end"),
        ("round(1", "expected '\\)', found the end"),
        ("1 + )", "unexpected '\\)' at position 4"),
        ("foo(1)", "unknown function or bare word 'foo'"),
        ("payload.a", "bare field 'payload.a' at position 0 .*: reference fields as @{payload.a}"),
        ("plan", "unknown function or bare word 'plan'"),
        ("round()", "round\\(\\) takes 1-2 argument\\(s\\), got 0"),
        ("abs(1, 2)", "abs\\(\\) takes 1 argument\\(s\\), got 2"),
        ("1 % 2", "unexpected '%' at position 2"),
        ("@{payload.a", "unclosed reference at position 0"),
        ("@{meta.a}", "only the payload scope"),
    ],
)
def test_malformed_expressions_are_refused_with_the_position(source, problem):
    with pytest.raises(ExpressionError, match=problem):
        compile_expression(source)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("@{payload.missing} + 1", "'\\+' needs numbers or text, got null from @{payload.missing}"),
        ("@{payload.obj} * 2", "'\\*' needs numbers, got an object from @{payload.obj}"),
        ('"a" - 1', "'-' needs numbers, got 'a' from \"a\""),
        ("true + 1", "'\\+' needs numbers or text, got true from true"),
        ("1 / (@{payload.n} - 5)", "division by zero in 1 / \\(@{payload.n} - 5\\)"),
        ("-@{payload.obj}", "cannot negate an object"),
        ('round("x")', "round\\(\\) needs a number, got 'x'"),
        ("round(1, 1.5)", "round\\(\\) takes whole decimal places"),
        ('max(1, "x")', "max\\(\\) needs numbers"),
    ],
)
def test_expressions_that_cannot_be_computed_for_a_record_say_why(source, problem):
    with pytest.raises(EvaluationError, match=problem):
        compile_expression(source).evaluate({"n": 5, "obj": {"k": 1}})
