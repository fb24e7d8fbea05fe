"""Hostile scripts: each fails safely and quickly, and the sandbox keeps working after.

Limits are set small here (settings are isolated per test by the shared conftest) so a
runaway script costs a fraction of a second.
"""

from __future__ import annotations

import datetime
import time
import uuid

import pytest

from streams.runtime import sandbox
from streams.runtime.base import Emit, Item, NodeContext
from streams.runtime.functions.script import ScriptFunction

TIME_LIMIT_MS = 300


def script_context(source: str, *, operator_id=None, version_id=None, node_id="script"):
    return NodeContext(
        operator_id=operator_id or uuid.uuid4(),
        stream_id=uuid.uuid4(),
        version_id=version_id or uuid.uuid4(),
        node={"id": node_id, "type": "transforms/script", "params": {"transform": source}},
        now=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
    )


def run(ctx: NodeContext, payloads: list) -> Emit:
    emit = Emit()
    ScriptFunction(ctx).process(
        [Item(payload, origin) for origin, payload in enumerate(payloads)], emit
    )
    return emit


def pushed(emit: Emit) -> list:
    return [item.payload for item in emit.outputs.get(None, [])]


@pytest.fixture(autouse=True)
def _small_limits(settings):
    settings.TALLY["STREAMS"]["SCRIPT_TIME_LIMIT_MS"] = TIME_LIMIT_MS
    settings.TALLY["STREAMS"]["SCRIPT_MEMORY_LIMIT_MB"] = 32
    settings.TALLY["STREAMS"]["SCRIPT_STATE_MAX_BYTES"] = 1024
    yield
    sandbox.runners.clear()


def assert_normal_batch_still_works() -> None:
    ctx = script_context("payload.ok = true; await push(payload)")
    assert pushed(run(ctx, [{"n": 1}])) == [{"n": 1, "ok": True}]


@pytest.mark.parametrize(
    "source",
    [
        "while (true) {}",
        "await push(payload); while (true) {}",  # after an await: in V8's microtasks
        "await null; for (;;) { Math.random(); }",
        "Promise.resolve().then(() => { while (true) {} }); await push(payload)",
    ],
    ids=["sync-loop", "loop-after-await", "loop-after-await-null", "loop-in-stray-promise"],
)
def test_an_infinite_loop_fails_the_batch_on_the_time_limit(source):
    ctx = script_context(source)
    started = time.monotonic()
    emit = run(ctx, [{"n": 1}, {"n": 2}])
    elapsed = time.monotonic() - started

    assert pushed(emit) == []
    reason = f"script time limit of {TIME_LIMIT_MS} ms exceeded"
    assert emit.failed == {0: reason, 1: reason}
    assert elapsed < 3
    assert_normal_batch_still_works()


def test_the_same_node_gets_a_fresh_isolate_after_a_runaway_batch():
    ctx = script_context("if (payload.loop) { while (true) {} } await push(payload)")
    assert set(run(ctx, [{"loop": True}]).failed) == {0}

    again = script_context(
        ctx.node["params"]["transform"], operator_id=ctx.operator_id, version_id=ctx.version_id
    )
    assert pushed(run(again, [{"loop": False}])) == [{"loop": False}]


@pytest.mark.parametrize(
    "source",
    [
        "const hoard = []; while (true) { hoard.push('x'.repeat(1024) + hoard.length); }",
        "await null; const hoard = [];"
        " while (true) { hoard.push({a: [1, 2, 3], b: hoard.length}); }",
        "let s = 'x'; while (true) { s = s + s; }",
    ],
    ids=["strings", "objects-after-await", "doubling-string"],
)
def test_a_memory_bomb_fails_the_batch_safely(source):
    ctx = script_context(source)
    started = time.monotonic()
    emit = run(ctx, [{"n": 1}])
    elapsed = time.monotonic() - started

    assert pushed(emit) == []
    (reason,) = emit.failed.values()
    # The heap limit, the time limit, or V8's own refusal of an over-long string: each
    # fails the record without hurting the worker.
    assert (
        "memory limit of 32 MB exceeded" in reason
        or "time limit" in reason
        or reason.startswith("RangeError: Invalid string length")
    ), reason
    assert elapsed < 5
    assert_normal_batch_still_works()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            'require("fs")',
            'Error: require("fs") is not available: scripts can only require "moment"',
        ),
        ('require("child_process").exec("id")', 'Error: require("child_process") is not available'),
        ('await fetch("http://example.com")', "ReferenceError: fetch is not defined"),
        ("process.exit(1)", "ReferenceError: process is not defined"),
        ("setTimeout(() => {}, 0)", "TypeError: setTimeout is not a function"),
        ("setInterval(() => {}, 0)", "ReferenceError: setInterval is not defined"),
        ("new SharedArrayBuffer(8)", "ReferenceError: SharedArrayBuffer is not defined"),
        ("Atomics.waitAsync", "ReferenceError: Atomics is not defined"),
        ("WebAssembly.compile", "ReferenceError: WebAssembly is not defined"),
        ("new ArrayBuffer(1e9)", "ReferenceError: ArrayBuffer is not defined"),
        ("XMLHttpRequest", "ReferenceError: XMLHttpRequest is not defined"),
        ("await import('fs')", None),  # a failed dynamic import: the message varies
    ],
)
def test_nothing_outside_the_sandbox_is_reachable(source, reason):
    emit = run(script_context(source + "; await push(payload)"), [{"n": 1}])

    assert pushed(emit) == []
    if reason is not None:
        assert emit.failed[0].startswith(reason), emit.failed[0]
    else:
        assert 0 in emit.failed
    assert_normal_batch_still_works()


@pytest.mark.parametrize(
    "expression",
    [
        'this.constructor.constructor("return this")()',
        'Function("return this")()',
        '(async function(){}).constructor("return this")',
        "globalThis",
        "(0, eval)('this')",
    ],
)
def test_the_global_object_holds_nothing_dangerous_and_is_frozen(expression):
    source = f"""
        let global = {expression};
        if (typeof global === "function") global = await global();
        const names = Object.getOwnPropertyNames(global);
        global.injected = 1;
        await push({{
            names,
            frozen: Object.isFrozen(global),
            injected: global.injected === 1,
        }});
    """
    (answer,) = pushed(run(script_context(source), [{}]))

    assert answer["frozen"] is True
    assert answer["injected"] is False
    # (mini-racer declares setTimeout with `var`, which cannot be deleted: it stays
    # as an undefined name, see test_timer_functions_are_gone.)
    dangerous = {
        "process",
        "require",
        "fetch",
        "setInterval",
        "console",
        "Atomics",
        "SharedArrayBuffer",
        "WebAssembly",
        "ArrayBuffer",
        "XMLHttpRequest",
    }
    assert not dangerous & set(answer["names"]), dangerous & set(answer["names"])


def test_timer_functions_are_gone():
    source = """await push({
        setTimeout: typeof setTimeout, clearTimeout: typeof clearTimeout,
        setImmediate: typeof setImmediate, queueMicrotask: typeof queueMicrotask,
    })"""
    (answer,) = pushed(run(script_context(source), [{}]))
    assert answer["setTimeout"] == answer["clearTimeout"] == answer["setImmediate"] == "undefined"


def test_the_intrinsics_are_frozen():
    source = """
        const intrinsics = {
            Object, "Object.prototype": Object.prototype, Array, "Array.prototype": Array.prototype,
            "Function.prototype": Function.prototype, "String.prototype": String.prototype,
            "Number.prototype": Number.prototype, "Promise.prototype": Promise.prototype,
            JSON, Math, Date, "Date.prototype": Date.prototype, RegExp, Map, Set, Error,
            "Error.prototype": Error.prototype, Reflect, Symbol, Intl,
            "AsyncFunction.prototype": Object.getPrototypeOf(async function () {}),
            "ArrayIterator": Object.getPrototypeOf([][Symbol.iterator]()),
            moment: require("moment"), "moment.fn": require("moment").fn,
        };
        const thawed = Object.keys(intrinsics).filter((name) => !Object.isFrozen(intrinsics[name]));
        await push({thawed});
    """
    (answer,) = pushed(run(script_context(source), [{}]))
    assert answer["thawed"] == []


def test_prototype_pollution_does_not_reach_the_next_record():
    source = """
        if (payload.attack) {
            Object.prototype.polluted = "yes";
            Array.prototype.push = function () { return 0; };
            String.prototype.toUpperCase = () => "pwned";
            JSON.stringify = () => "{}";
            Object.defineProperty(Object.prototype, "sneaky", {get() { return 1; }});
        }
        await push({
            polluted: ({}).polluted === undefined ? null : ({}).polluted,
            sneaky: "sneaky" in {},
            upper: "abc".toUpperCase(),
            pushWorks: [1].push(2) === 2,
        });
    """
    emit = run(script_context(source), [{"attack": True}, {"attack": False}])

    # The attacking record itself fails (defineProperty on a frozen object throws);
    # whatever it managed before that is invisible to the next record.
    assert emit.failed[0].startswith("TypeError: Cannot define property sneaky")
    assert pushed(emit) == [{"polluted": None, "sneaky": False, "upper": "ABC", "pushWorks": True}]


def test_assigning_common_method_names_on_own_objects_still_works():
    source = """
        const money = {amount: 5};
        money.toString = function () { return this.amount + " EUR"; };
        class Problem extends Error {}
        const problem = new Problem("x");
        problem.name = "Problem";
        await push({text: String(money), name: problem.name});
    """
    assert pushed(run(script_context(source), [{}])) == [{"text": "5 EUR", "name": "Problem"}]


def test_moment_cannot_be_tampered_with_for_the_next_record():
    source = """
        const moment = require("moment");
        if (payload.attack) { moment.fn.format = () => "pwned"; moment.pwned = true; }
        await push({date: moment.utc("2024-02-29").format("YYYY-MM-DD"), pwned: !!moment.pwned});
    """
    emit = run(script_context(source), [{"attack": True}, {"attack": False}])
    assert pushed(emit) == [
        {"date": "2024-02-29", "pwned": False},
        {"date": "2024-02-29", "pwned": False},
    ]


def test_isolates_are_separate_per_node_stream_and_operator():
    """A leak would need somewhere shared to write; each key gets its own isolate, so a
    script's own top-level binding (the one mutable thing it owns) stays its own."""
    writer = "globalThis.leak = 'written'; await push({leak: globalThis.leak ?? null})"
    reader = "await push({leak: globalThis.leak ?? null, polluted: ({}).polluted ?? null})"
    operator_id, version_id = uuid.uuid4(), uuid.uuid4()
    polluter = (
        "try { Object.prototype.polluted = 'yes'; } catch (e) {}"
        "await push({polluted: ({}).polluted ?? null})"
    )

    run(script_context(writer, operator_id=operator_id, version_id=version_id), [{}])
    run(
        script_context(
            polluter, operator_id=operator_id, version_id=version_id, node_id="polluter"
        ),
        [{}],
    )
    contexts = {
        "other node": script_context(
            reader, operator_id=operator_id, version_id=version_id, node_id="other"
        ),
        "other stream version": script_context(reader, operator_id=operator_id),
        "other operator": script_context(reader, version_id=version_id),
    }
    for where, ctx in contexts.items():
        assert pushed(run(ctx, [{}])) == [{"leak": None, "polluted": None}], where


def test_same_script_in_two_operators_gets_two_isolates():
    source = "await push(payload)"
    version_id = uuid.uuid4()
    acme = sandbox.runners.get(
        operator_id=uuid.uuid4(), version_id=version_id, node_id="script", source=source
    )
    globex = sandbox.runners.get(
        operator_id=uuid.uuid4(), version_id=version_id, node_id="script", source=source
    )
    assert acme is not globex


def test_state_node_beyond_the_size_cap_fails_that_record_and_restores_state():
    source = """
        state.node.items = state.node.items || [];
        state.node.items.push(payload.text);
        await push({count: state.node.items.length});
    """
    ctx = script_context(source)
    emit = run(ctx, [{"text": "a"}, {"text": "x" * 2000}, {"text": "b"}])

    assert emit.failed == {1: "state.node is larger than 1024 bytes"}
    assert pushed(emit) == [{"count": 1}, {"count": 2}]
    assert ctx.state == {"items": ["a", "b"]}


def test_state_node_size_counts_utf8_bytes():
    source = "state.node.text = payload.text; await push({})"
    ctx = script_context(source)
    # 400 three-byte characters: 1,200 bytes of UTF-8, though only 400 JS characters.
    emit = run(ctx, [{"text": "€" * 400}])
    assert emit.failed == {0: "state.node is larger than 1024 bytes"}
    assert ctx.state == {}


def test_replacing_state_node_with_a_non_object_fails_the_record():
    emit = run(script_context("state.node = 5; await push({})"), [{}])
    assert emit.failed == {0: "state.node must stay a JSON object"}


def test_a_push_after_the_record_is_done_goes_nowhere():
    source = """
        if (payload.n === 1) {
            // Not awaited: this would push while the next record runs.
            (async () => { await null; await null; await null; await push({late: true}); })();
        }
        await push({n: payload.n});
    """
    emit = run(script_context(source), [{"n": 1}, {"n": 2}])
    assert pushed(emit) == [{"n": 1}, {"n": 2}]


def test_pushing_something_that_is_not_json_fails_the_record():
    source = """
        if (payload.kind === "cycle") { const a = {}; a.self = a; await push(a); }
        if (payload.kind === "bigint") { await push({n: 10n}); }
        if (payload.kind === "undefined") { await push(undefined); }
    """
    emit = run(
        script_context(source), [{"kind": "cycle"}, {"kind": "bigint"}, {"kind": "undefined"}]
    )
    assert emit.failed[0].startswith("TypeError: Converting circular structure to JSON")
    assert emit.failed[1].startswith("TypeError: Do not know how to serialize a BigInt")
    assert emit.failed[2] == "TypeError: push() needs a JSON value, got undefined"


def test_throwing_a_non_error_value_is_reported():
    emit = run(script_context("throw 'plain text'"), [{}])
    assert emit.failed == {0: "Script threw plain text"}


def test_a_script_cannot_break_out_of_its_function_wrapper():
    source = "}); Object.prototype.polluted = 1; (async function () {"
    emit = run(script_context(source), [{}])
    assert emit.failed[0].startswith("SyntaxError")
    assert_normal_batch_still_works()
