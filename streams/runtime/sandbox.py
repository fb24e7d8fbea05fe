"""The JavaScript sandbox that runs `transforms/script` nodes, on V8 (mini-racer).

Each (operator, stream version, node, script) gets its own V8 isolate, so nothing one
script does can be seen by another. An isolate is set up once and kept in a small
per-process LRU cache; a batch then crosses into V8 in one call, as JSON text, and its
results come back the same way:

1. Setup: load moment, take away what a script must not reach (timers, shared memory,
   WebAssembly, raw buffers), freeze every intrinsic and the global object, then
   compile the script as the body of an async function. Freezing is what keeps one
   record's prototype pollution from reaching the next.
2. Batch: a JS loop calls the script once per record with its own `payload`, `push`,
   `log`; `state.node` is shared across records. A record that throws fails alone:
   what it pushed is dropped and `state.node` goes back to what it was before it.
3. Limits: the whole batch has `SCRIPT_TIME_LIMIT_MS`; the isolate has
   `SCRIPT_MEMORY_LIMIT_MB` of heap. Breaking either fails every record of the batch
   and throws the isolate away (the next batch gets a fresh one).

Why a notification rather than a return value: the script's `await`s resolve in V8's
microtask queue, which mini-racer drains *after* a call returns, outside its timeout.
So the batch reports its end through a callback, Python waits for it with its own
deadline, and on expiry closes the isolate, which terminates whatever still runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer

from common import json

CACHE_SIZE = 64
_VENDOR = Path(__file__).parent / "vendor"
# How often the wait for a batch looks at the memory flag (a script past its heap
# limit is terminated by V8 and never reports back).
_POLL_SECONDS = 0.02
# Setup runs only Tally's code (and parses the script), so it has its own allowance
# rather than the script's time limit, which may be set lower than setup takes.
_SETUP_SECONDS = 10


@dataclass
class RecordOutcome:
    """What the script did with one input record: the records it pushed (in order),
    its log lines as (level, message), its audit calls as (operation, key, value), or
    the reason it failed (then `pushed` and `audit` are empty)."""

    pushed: list[Any] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    audit: list[tuple[str, str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class BatchOutcome:
    """One outcome per input record, in input order, and `state.node` after the batch
    (unchanged by failed records)."""

    records: list[RecordOutcome]
    state: dict[str, Any]


class ScriptRunner:
    """One compiled script in its own V8 isolate. Not for use by two threads at once:
    `run_batch` holds the runner's lock."""

    def __init__(self, source: str) -> None:
        self._lock = threading.Lock()
        self._racer: MiniRacer | None = None
        self._notification = None
        self._finished = threading.Event()
        self._result: Any = None
        self.compile_error: str | None = None
        self._start_batch = None
        self._setup(source)

    # -- setup -------------------------------------------------------------------------

    def _setup(self, source: str) -> None:
        racer = MiniRacer()
        racer.set_hard_memory_limit(_memory_limit_bytes())
        # mini-racer's own way to hear from JS without calling into the isolate (which
        # would block behind a runaway microtask); pinned to mini-racer 0.14.
        context = racer._ctx
        self._notification = context._register_js_notification(self._on_finished)
        notify = self._notification.__enter__()
        self._racer = racer
        try:
            make_runner = racer.eval(_bootstrap_source(), timeout_sec=_SETUP_SECONDS)
            self._start_batch = make_runner(notify, source, timeout_sec=_SETUP_SECONDS)
        except JSEvalException as exc:
            self.close()
            raise SandboxSetupError(_first_line(exc)) from exc
        if isinstance(self._start_batch, str):  # the script did not compile
            self.compile_error = self._start_batch
            self._start_batch = None

    def _on_finished(self, value_handle: Any) -> None:
        # Runs on mini-racer's event loop thread: keep the handle, read it later.
        self._result = value_handle
        self._finished.set()

    def close(self) -> None:
        """Free the isolate; this also terminates any JS still running in it."""
        racer, self._racer = self._racer, None
        if racer is None:
            return
        notification, self._notification = self._notification, None
        if notification is not None:
            notification.__exit__(None, None, None)
        racer.close()

    @property
    def closed(self) -> bool:
        return self._racer is None

    # -- running -----------------------------------------------------------------------

    def run_batch(self, payloads: list[Any], state: dict[str, Any]) -> BatchOutcome:
        """Run the script once per payload, in order, starting from `state` (the node's
        `state.node`). Never raises for what the script does; a broken limit fails
        every record and closes this runner (the cache then builds a new one)."""
        with self._lock:
            if self.compile_error is not None:
                return _all_failed(payloads, state, self.compile_error)
            if self._racer is None:
                raise SandboxClosed("This script runner was closed.")
            return self._run(payloads, state)

    def _run(self, payloads: list[Any], state: dict[str, Any]) -> BatchOutcome:
        limit_ms = settings.TALLY["STREAMS"]["SCRIPT_TIME_LIMIT_MS"]
        memory_mb = settings.TALLY["STREAMS"]["SCRIPT_MEMORY_LIMIT_MB"]
        racer = self._racer
        racer.set_hard_memory_limit(memory_mb * 1024 * 1024)
        deadline = time.monotonic() + limit_ms / 1000
        self._finished.clear()
        self._result = None
        try:
            self._start_batch(
                json.encode(payloads).decode(),
                json.encode(state).decode(),
                settings.TALLY["STREAMS"]["SCRIPT_STATE_MAX_BYTES"],
                timeout_sec=limit_ms / 1000,
            )
        except JSTimeoutException:
            return self._give_up(payloads, state, _time_reason(limit_ms))
        except JSOOMException:
            return self._give_up(payloads, state, _memory_reason(memory_mb))
        except JSEvalException as exc:
            # Records run inside a try, so only a broken limit or a broken isolate
            # gets here; V8 does not always say which limit it was.
            if racer.was_hard_memory_limit_reached():
                return self._give_up(payloads, state, _memory_reason(memory_mb))
            return self._give_up(payloads, state, f"Script failed: {_first_line(exc)}")

        while not self._finished.wait(_POLL_SECONDS):
            if racer.was_hard_memory_limit_reached():
                return self._give_up(payloads, state, _memory_reason(memory_mb))
            if time.monotonic() >= deadline:
                return self._give_up(payloads, state, _time_reason(limit_ms))
        text = racer._ctx._value_handle_to_python(self._result)[0]
        self._result = None
        try:
            outcome = _parse_outcome(text, len(payloads))
        except json.InvalidJSON as exc:  # e.g. a pushed record nested too deep to read
            return _all_failed(payloads, state, f"The script's output is unusable: {exc.message}")
        if outcome.state is None:
            outcome.state = state
        return outcome

    def _give_up(self, payloads: list[Any], state: dict[str, Any], reason: str) -> BatchOutcome:
        self.close()
        return _all_failed(payloads, state, reason)


class SandboxSetupError(Exception):
    """The sandbox itself could not be set up (not the script's fault)."""


class SandboxClosed(Exception):
    """A closed runner was asked to run a batch."""


def _all_failed(payloads: list[Any], state: dict[str, Any], reason: str) -> BatchOutcome:
    return BatchOutcome([RecordOutcome(error=reason) for _ in payloads], state)


def _parse_outcome(text: str, expected: int) -> BatchOutcome:
    decoded = json.loads_lenient(text)
    if "fatal" in decoded:  # the runner itself broke: no record got through
        return BatchOutcome([RecordOutcome(error=decoded["fatal"]) for _ in range(expected)], None)
    records = []
    for entry in decoded["records"]:
        logs = [(level, message) for level, message in entry["logs"]]
        if "error" in entry:
            records.append(RecordOutcome(logs=logs, error=entry["error"]))
        else:
            audit = [(op, key, value) for op, key, value in entry["audit"]]
            records.append(RecordOutcome(pushed=entry["pushed"], logs=logs, audit=audit))
    if len(records) != expected:  # cannot happen unless the runner code is wrong
        raise RuntimeError(f"The sandbox answered for {len(records)} of {expected} records.")
    return BatchOutcome(records, decoded["state"])


def _time_reason(limit_ms: int) -> str:
    return f"script time limit of {limit_ms} ms exceeded"


def _memory_reason(limit_mb: int) -> str:
    return f"script memory limit of {limit_mb} MB exceeded"


def _memory_limit_bytes() -> int:
    return settings.TALLY["STREAMS"]["SCRIPT_MEMORY_LIMIT_MB"] * 1024 * 1024


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- the per-process cache -------------------------------------------------------------


class RunnerCache:
    """Compiled runners by (operator, version, node, source hash), least recently used
    evicted first. A runner is never shared between keys, so two nodes (or operators)
    with the same script still get separate isolates."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._runners: OrderedDict[tuple, ScriptRunner] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, *, operator_id: uuid.UUID, version_id: uuid.UUID, node_id: str, source: str
    ) -> ScriptRunner:
        key = (operator_id, version_id, node_id, hashlib.sha256(source.encode()).hexdigest())
        with self._lock:
            runner = self._runners.get(key)
            if runner is not None and not runner.closed:
                self._runners.move_to_end(key)
                return runner
        # Build outside the lock: setup takes milliseconds and other keys need not wait.
        runner = ScriptRunner(source)
        evicted = []
        with self._lock:
            previous = self._runners.pop(key, None)
            if previous is not None and previous is not runner:
                evicted.append(previous)
            self._runners[key] = runner
            while len(self._runners) > self.size:
                evicted.append(self._runners.popitem(last=False)[1])
        for old in evicted:
            with old._lock:  # wait for a batch still running on it
                old.close()
        return runner

    def clear(self) -> None:
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            with runner._lock:
                runner.close()


runners = RunnerCache()


def run_script(
    *,
    operator_id: uuid.UUID,
    version_id: uuid.UUID,
    node_id: str,
    source: str,
    payloads: list[Any],
    state: dict[str, Any],
) -> BatchOutcome:
    """Run `source` over a batch with the cached runner for this node. Never raises
    for the script's sake: whatever goes wrong fails records, with the reason."""
    call = functools.partial(_run_cached, operator_id, version_id, node_id, source, payloads, state)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    # mini-racer's synchronous calls refuse to run in a thread whose asyncio loop is
    # running (an ASGI server, a test driving a browser): such callers lend a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def _run_cached(operator_id, version_id, node_id, source, payloads, state) -> BatchOutcome:
    for _attempt in range(2):
        try:
            runner = runners.get(
                operator_id=operator_id, version_id=version_id, node_id=node_id, source=source
            )
            return runner.run_batch(payloads, state)
        except SandboxSetupError as exc:
            return _all_failed(payloads, state, f"The script sandbox could not start: {exc}")
        except SandboxClosed:  # evicted by another thread between get and run: again
            continue
    return _all_failed(payloads, state, "The script sandbox was closed while in use.")


# -- the JavaScript side ---------------------------------------------------------------


@cache
def _bootstrap_source() -> str:
    moment = (_VENDOR / "moment.min.js").read_text(encoding="utf-8")
    return _BOOTSTRAP.replace("/*MOMENT*/", moment)


# Evaluates to a function (notify, source) that hardens the isolate, compiles the
# script and returns `startBatch`, or the compile error as a string. Code here runs
# before anything is frozen, so it captures every builtin it uses.
_BOOTSTRAP = r"""
(function () {
"use strict";
const moment = (function (module) {
  const exports = module.exports;
/*MOMENT*/
;return module.exports;
})({ exports: {} });

return function setup(notify, source) {
  const { freeze, getOwnPropertyNames, getOwnPropertySymbols, getOwnPropertyDescriptor,
          defineProperty, getPrototypeOf } = Object;
  const hasOwn = Object.prototype.hasOwnProperty;
  const call = Function.prototype.call;
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const StringCtor = String;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const arrayPush = Array.prototype.push;
  const arrayJoin = Array.prototype.join;
  const isArray = Array.isArray;
  const replace = String.prototype.replace;
  const slice = String.prototype.slice;
  const charCodeAt = String.prototype.charCodeAt;
  const global = globalThis;

  // 1. Nothing that schedules work after the batch, shares memory or allocates
  // outside the heap limit. mini-racer's own setTimeout is a non-deletable `var`.
  for (const name of ["setTimeout", "clearTimeout", "__timer_manager"]) {
    if (hasOwn.call(global, name)) global[name] = undefined;
  }
  for (const name of ["SharedArrayBuffer", "Atomics", "WebAssembly", "ArrayBuffer",
      "DataView", "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array",
      "Uint16Array", "Int32Array", "Uint32Array", "Float16Array", "Float32Array",
      "Float64Array", "BigInt64Array", "BigUint64Array", "WeakRef",
      "FinalizationRegistry", "console", "d8", "print", "read", "readline", "load",
      "quit", "version", "os", "gc"]) {
    delete global[name];
  }

  // 2. Frozen prototypes turn `obj.toString = f` into a silent no-op (the "override
  // mistake"). For the few names scripts commonly assign, an accessor keeps that
  // working on ordinary objects while the prototype itself stays untouchable.
  function allowOverride(target, name) {
    const desc = getOwnPropertyDescriptor(target, name);
    if (!desc || !hasOwn.call(desc, "value")) return;
    const value = desc.value;
    defineProperty(target, name, {
      get() { return value; },
      set(newValue) {
        if (this === target) {
          throw new TypeErrorCtor("Cannot assign to read only property '" + name + "'");
        }
        defineProperty(this, name,
          { value: newValue, writable: true, enumerable: true, configurable: true });
      },
      enumerable: desc.enumerable,
      configurable: false,
    });
  }
  for (const name of ["constructor", "toString", "valueOf", "toLocaleString"]) {
    allowOverride(Object.prototype, name);
  }
  for (const name of ["name", "message", "toString"]) allowOverride(Error.prototype, name);

  // 3. Freeze everything reachable from the global object, moment, and the intrinsics
  // that no global names.
  const visited = new Set();
  function deepFreeze(root) {
    const pending = [root];
    while (pending.length) {
      const value = pending.pop();
      if ((typeof value !== "object" && typeof value !== "function") || value === null) continue;
      if (visited.has(value)) continue;
      visited.add(value);
      freeze(value);
      arrayPush.call(pending, getPrototypeOf(value));
      for (const key of [...getOwnPropertyNames(value), ...getOwnPropertySymbols(value)]) {
        const desc = getOwnPropertyDescriptor(value, key);
        if (!desc) continue;
        if (hasOwn.call(desc, "value")) arrayPush.call(pending, desc.value);
        if (desc.get) arrayPush.call(pending, desc.get);
        if (desc.set) arrayPush.call(pending, desc.set);
      }
    }
  }
  const hidden = [
    getPrototypeOf(async function () {}),
    getPrototypeOf(function* () {}),
    getPrototypeOf(async function* () {}),
    getPrototypeOf([][Symbol.iterator]()),
    getPrototypeOf(new Map()[Symbol.iterator]()),
    getPrototypeOf(new Set()[Symbol.iterator]()),
    getPrototypeOf(""[Symbol.iterator]()),
    getPrototypeOf(/a/[Symbol.matchAll]("")),
    getPrototypeOf((function* () {})()),
    getPrototypeOf((async function* () {})()),
    getOwnPropertyDescriptor(Function.prototype, "caller")?.get,
    (function () { "use strict"; return getOwnPropertyDescriptor(arguments, "callee")?.get; })(),
  ];
  for (const intrinsic of hidden) deepFreeze(intrinsic);
  if (typeof __TimerManager === "function") deepFreeze(__TimerManager);
  deepFreeze(moment);
  deepFreeze(global);

  // A record refused by the sandbox (not by the script): the reason is the whole text.
  class Refusal { constructor(reason) { this.reason = reason; } }

  function describe(error) {
    if (error instanceof Refusal) return error.reason;
    try {
      if (error instanceof ErrorCtor) {
        return StringCtor(error.name) + ": " + StringCtor(error.message);
      }
      return "Script threw " + StringCtor(error);
    } catch (_) {
      return "Script threw a value that cannot be shown";
    }
  }

  // 4. Compile the script as the body of an async function. The Function constructor
  // parses the body on its own, so a script cannot close the function and reach out.
  const AsyncFunction = getPrototypeOf(async function () {}).constructor;
  let script;
  try {
    script = new AsyncFunction("payload", "state", "push", "log", "require", "audit", source);
  } catch (error) {
    return describe(error);
  }

  function requireModule(name) {
    if (name === "moment") return moment;
    throw new ErrorCtor("require(\"" + StringCtor(name) +
      "\") is not available: scripts can only require \"moment\"");
  }
  freeze(requireModule);

  const MAX_LOG_CHARS = 100000;

  function show(value) {
    if (typeof value === "string") return value;
    try {
      const text = stringify(value);
      return text === undefined ? StringCtor(value) : text;
    } catch (_) {
      return StringCtor(value);
    }
  }

  // log.info("%s has %d items: %j", name, n, obj): printf-style placeholders, and
  // any further arguments appended with spaces.
  function formatMessage(args) {
    let rest = args;
    let message = "";
    if (typeof args[0] === "string") {
      let index = 1;
      message = call.call(replace, args[0], /%[sdifjoO%]/g, (token) => {
        if (token === "%%") return "%";
        if (index >= args.length) return token;
        const value = args[index++];
        if (token === "%i") return StringCtor(Math.trunc(Number(value)));
        if (token === "%d") return StringCtor(Number(value));
        if (token === "%f") return StringCtor(Number(value));
        if (token === "%s") return typeof value === "string" ? value : show(value);
        return show(value);
      });
      rest = call.call(Array.prototype.slice, args, index);
    }
    for (const value of rest) message += (message ? " " : "") + show(value);
    return message.length > MAX_LOG_CHARS ? call.call(slice, message, 0, MAX_LOG_CHARS) : message;
  }

  function utf8Length(text) {
    let bytes = 0;
    for (let i = 0; i < text.length; i++) {
      const code = call.call(charCodeAt, text, i);
      if (code < 0x80) bytes += 1;
      else if (code < 0x800) bytes += 2;
      else if (code >= 0xd800 && code <= 0xdbff) { bytes += 4; i++; }
      else bytes += 3;
    }
    return bytes;
  }

  // 5. The batch: one call per record, each with its own push/log/audit that stop
  // working once the record is done (a promise the script forgot to await cannot
  // push into the next record).
  async function runBatch(recordsText, stateText, stateMaxBytes) {
    const records = parse(recordsText);
    let node = parse(stateText);
    let nodeText = stateText;
    const parts = [];
    for (let i = 0; i < records.length; i++) {
      const pushed = [];
      const logs = [];
      const audits = [];
      let open = true;
      const push = (record) => {
        if (!open) throw new ErrorCtor("push() was called after its record was done; await it");
        const text = stringify(record);
        if (text === undefined) {
          throw new TypeErrorCtor("push() needs a JSON value, got " + typeof record);
        }
        arrayPush.call(pushed, text);
      };
      const logAt = (level) => (...args) => {
        if (open) arrayPush.call(logs, [level, formatMessage(args)]);
      };
      const log = freeze({
        info: logAt("info"), warn: logAt("warn"), warning: logAt("warn"), error: logAt("error"),
      });
      const auditAt = (op) => (key, value) => {
        if (open) arrayPush.call(audits, [op, StringCtor(key), op === "count" ? 1 : value]);
      };
      const audit = freeze({ count: auditAt("count"), sum: auditAt("sum"), set: auditAt("set") });
      const state = { node };
      try {
        await call.call(script, undefined, records[i], state, push, log, requireModule, audit);
        const newNode = state.node;
        if (typeof newNode !== "object" || newNode === null || isArray(newNode)) {
          throw new Refusal("state.node must stay a JSON object");
        }
        const text = stringify(newNode);
        if (text.length > stateMaxBytes / 3 && utf8Length(text) > stateMaxBytes) {
          throw new Refusal("state.node is larger than " + stateMaxBytes + " bytes");
        }
        node = newNode;
        nodeText = text;
        arrayPush.call(parts, '{"pushed":[' + call.call(arrayJoin, pushed, ",") + '],"logs":' +
          stringify(logs) + ',"audit":' + stringify(audits) + "}");
      } catch (error) {
        // The record's effects are undone: its pushes are dropped, the state restored.
        node = parse(nodeText);
        arrayPush.call(parts,
          '{"error":' + stringify(describe(error)) + ',"logs":' + stringify(logs) + "}");
      } finally {
        open = false;
      }
    }
    return '{"records":[' + call.call(arrayJoin, parts, ",") + '],"state":' + nodeText + "}";
  }

  return function startBatch(recordsText, stateText, stateMaxBytes) {
    runBatch(recordsText, stateText, stateMaxBytes).then(
      (text) => notify(text),
      (error) => notify(stringify({ fatal: describe(error) })),
    );
  };
};
})()
"""
