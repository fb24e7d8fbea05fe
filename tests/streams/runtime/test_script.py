"""`transforms/script` with the reference product's real scripts, run as the engine runs
a node: a batch of items through `ScriptFunction.process`, state in the node context."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from streams.runtime import sandbox
from streams.runtime.base import Emit, Item, NodeContext
from streams.runtime.functions.script import ScriptFunction

FIXTURES = Path(__file__).resolve().parents[4] / "shared/fixtures/usage-engine-streams"


def fixture_script(file_name: str, node_name: str) -> str:
    config = json.loads((FIXTURES / file_name).read_text())
    (node,) = [node for node in config["nodes"] if node.get("name") == node_name]
    assert node["type"] == "transforms/script"
    return node["params"]["transform"]


def script_context(source: str, *, state: dict | None = None, **ids) -> NodeContext:
    return NodeContext(
        operator_id=ids.get("operator_id") or uuid.uuid4(),
        stream_id=ids.get("stream_id") or uuid.uuid4(),
        version_id=ids.get("version_id") or uuid.uuid4(),
        node={
            "id": ids.get("node_id", "script"),
            "type": "transforms/script",
            "params": {"transform": source},
        },
        now=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
        state={} if state is None else state,
    )


def run(ctx: NodeContext, payloads: list) -> Emit:
    emit = Emit()
    function = ScriptFunction(ctx)
    function.process([Item(payload, origin) for origin, payload in enumerate(payloads)], emit)
    function.finish(emit, end_of_execution=False)
    return emit


def pushed(emit: Emit) -> list:
    return [item.payload for item in emit.outputs.get(None, [])]


@pytest.fixture(autouse=True)
def _fresh_runners():
    yield
    sandbox.runners.clear()


def test_simulate_usage_counts_in_state_node_and_pushes_duplicates():
    ctx = script_context(
        fixture_script("printing-as-a-service-with-metering.json", "Simulate Usage")
    )
    emit = run(ctx, [{"value": value} for value in range(1, 11)])

    events = pushed(emit)
    # Record 5 and 10 are pushed twice (the 20% duplicates): 12 events from 10 inputs.
    assert len(events) == 12
    assert ctx.state == {"count": 10}
    assert not emit.failed
    first = events[0]
    assert first["printerId"] == 101
    assert first["sheets"] == 3  # Math.floor(1 * 3.55)
    assert first["eventId"].startswith("101_")  # the Date's toString, as in JS
    # A Date pushed crosses as its ISO text.
    datetime.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    invalid = [event for event in events if event["printerId"] == "invalidShouldBeInt"]
    assert [event["timestamp"] for event in invalid] == ["UNKNOWN"]


def test_state_node_persists_across_batches_through_the_node_context():
    source = fixture_script("printing-as-a-service-with-metering.json", "Simulate Usage")
    operator_id, version_id = uuid.uuid4(), uuid.uuid4()
    ctx = script_context(source, operator_id=operator_id, version_id=version_id)
    run(ctx, [{"value": 1}, {"value": 2}])
    assert ctx.state == {"count": 2}

    # The next batch gets a new context loaded with the saved state, as the engine does.
    saved = dict(ctx.state)
    next_ctx = script_context(source, operator_id=operator_id, version_id=version_id, state=saved)
    run(next_ctx, [{"value": 3}])
    assert next_ctx.state == {"count": 3}
    assert next_ctx.state is saved  # updated in place, the engine keeps this dict


def test_enrich_crm_adds_customer_and_department():
    ctx = script_context(fixture_script("printing-as-a-service-with-metering.json", "Enrich CRM 1"))
    emit = run(ctx, [{"printerId": 101, "sheets": 3}, {"printerId": 4, "sheets": 1}])

    assert pushed(emit) == [
        {"printerId": 101, "sheets": 3, "customer": "Guz Inc", "department": "Research"},
        {"printerId": 4, "sheets": 1, "customer": "Bar Inc", "department": "Development"},
    ]


def test_format_email_uses_optional_chaining_and_spread():
    ctx = script_context(fixture_script("printing-as-a-service-with-metering.json", "Format email"))
    threshold = {"capacityPercentage": 90, "customFields": {"action": "EMAIL_MAINTENANCE"}}
    emit = run(ctx, [{"userId": "101", "value": Decimal("9000.5"), "thresholds": [threshold]}])

    (email,) = pushed(emit)
    assert email["value"] == Decimal("9000.5")
    assert email["message"] == (
        "The printer with id 101 soon needs maintenance as its usage has reached 90. "
        "Kindly schedule the maintenance."
    )


def test_summarize_script_requires_moment_and_logs_each_record():
    ctx = script_context(fixture_script("summarize-monthly-usage-data.json", "Simulate Data"))
    emit = run(ctx, [{"value": 1}, {"value": 2}])

    events = pushed(emit)
    assert [event["downloadedGame"] for event in events] == [2, 4]
    today = datetime.date.today()
    assert events[0]["dateTime"] == (today + datetime.timedelta(days=1)).isoformat()
    assert [(line.level, line.message) for line in ctx.logs] == [
        ("info", 'Receive data: {"value":1}'),
        ("info", 'Receive data: {"value":2}'),
    ]
    assert {line.node_id for line in ctx.logs} == {"script"}


def test_cultflicks_script_may_call_audit():
    ctx = script_context(fixture_script("cultflicks-video-streaming.json", "Enrich user info"))
    emit = run(ctx, [{"user_id": 2, "title": "Bad Taste"}])

    (view,) = pushed(emit)
    assert view["country"] == "Moldania"


def test_numbers_round_trip_exactly():
    ctx = script_context("await push(payload)")
    records = [
        {"int": 7, "big": 9007199254740991, "dec": Decimal("56.8"), "neg": Decimal("-0.125")},
        {"list": [Decimal("1.1"), Decimal("2.2"), 3], "nested": {"price": Decimal("0.0001")}},
    ]
    assert pushed(run(ctx, records)) == records
    assert isinstance(pushed(run(ctx, [{"n": 5}]))[0]["n"], int)


def test_arithmetic_in_the_script_comes_back_as_javascript_computed_it():
    ctx = script_context("payload.total = payload.a * 2; await push(payload)")
    (result,) = pushed(run(ctx, [{"a": Decimal("28.4")}]))
    assert result["total"] == Decimal("56.8")


def test_a_script_error_fails_only_that_record_with_the_js_message():
    ctx = script_context("await push({x: payload.inner.x})")
    emit = run(ctx, [{"inner": {"x": 1}}, {}, {"inner": {"x": 3}}])

    assert pushed(emit) == [{"x": 1}, {"x": 3}]
    assert emit.failed == {1: "TypeError: Cannot read properties of undefined (reading 'x')"}


def test_records_pushed_before_an_error_are_discarded():
    ctx = script_context(
        "await push({step: 1, n: payload.n});\n"
        "if (payload.n === 2) throw new Error('boom');\n"
        "await push({step: 2, n: payload.n});"
    )
    emit = run(ctx, [{"n": 1}, {"n": 2}, {"n": 3}])

    assert [(event["n"], event["step"]) for event in pushed(emit)] == [
        (1, 1),
        (1, 2),
        (3, 1),
        (3, 2),
    ]
    assert emit.failed == {1: "Error: boom"}
    assert [item.origin for item in emit.outputs[None]] == [0, 0, 2, 2]


def test_a_failed_record_leaves_state_node_as_it_was():
    ctx = script_context(
        "state.node.seen = (state.node.seen || 0) + 1;\n"
        "if (payload.bad) throw new Error('bad record');\n"
        "await push({seen: state.node.seen});",
        state={"seen": 10},
    )
    emit = run(ctx, [{}, {"bad": True}, {}])

    assert pushed(emit) == [{"seen": 11}, {"seen": 12}]
    assert ctx.state == {"seen": 12}


def test_log_levels_and_printf_placeholders():
    ctx = script_context(
        'log.info("This is %s object: %j, it contains %d greeting phrases", "my",'
        " {greeting: 'hello'}, 1);\n"
        'log.warn("careful", 42, {a: 1});\n'
        'log.error("failed for", payload.id);\n'
        "await push(payload);"
    )
    run(ctx, [{"id": "r1"}])

    assert [(line.level, line.message) for line in ctx.logs] == [
        ("info", 'This is my object: {"greeting":"hello"}, it contains 1 greeting phrases'),
        ("warn", 'careful 42 {"a":1}'),
        ("error", "failed for r1"),
    ]


def test_a_script_that_does_not_compile_fails_every_record():
    ctx = script_context("await push(payload")
    emit = run(ctx, [{"a": 1}, {"a": 2}])

    assert pushed(emit) == []
    assert set(emit.failed) == {0, 1}
    assert emit.failed[0].startswith("SyntaxError:")


def test_pushing_zero_or_many_records_per_input():
    ctx = script_context("for (const item of payload.items) { await push({item}); }")
    emit = run(ctx, [{"items": []}, {"items": ["a", "b", "c"]}])

    assert pushed(emit) == [{"item": "a"}, {"item": "b"}, {"item": "c"}]
    assert [item.origin for item in emit.outputs[None]] == [1, 1, 1]
    assert not emit.failed


def test_a_pushed_record_is_taken_as_it_was_when_pushed():
    ctx = script_context("await push(payload); payload.n = 2; await push(payload);")
    assert pushed(run(ctx, [{"n": 1}])) == [{"n": 1}, {"n": 2}]


def test_an_empty_batch_does_not_touch_the_sandbox():
    ctx = script_context("throw new Error('never')", state={"kept": 1})
    emit = run(ctx, [])
    assert emit.emitted == 0
    assert ctx.state == {"kept": 1}


def test_the_compiled_script_is_reused_for_the_same_node():
    source = "state.node.n = (state.node.n || 0) + 1; await push(payload)"
    operator_id, version_id = uuid.uuid4(), uuid.uuid4()
    first = sandbox.runners.get(
        operator_id=operator_id, version_id=version_id, node_id="script", source=source
    )
    second = sandbox.runners.get(
        operator_id=operator_id, version_id=version_id, node_id="script", source=source
    )
    changed = sandbox.runners.get(
        operator_id=operator_id, version_id=version_id, node_id="script", source=source + ";"
    )
    assert first is second
    assert changed is not first


def test_scripts_run_for_callers_inside_a_running_event_loop():
    """An ASGI server or a browser-driving test calls with an asyncio loop running in
    its thread, where mini-racer's synchronous calls refuse to work."""
    import asyncio

    async def caller():
        return run(script_context("payload.n += 1; await push(payload)"), [{"n": 1}])

    emit = asyncio.run(caller())
    assert pushed(emit) == [{"n": 2}]
    assert not emit.failed
