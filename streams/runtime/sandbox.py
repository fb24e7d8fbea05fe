"""The JavaScript sandbox that runs `transforms/script` and `transforms/script_aggregate`
nodes, on V8 (mini-racer).

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

A script aggregator's script is compiled with one more parameter, `session`: the
aggregation session of the record's key, which it may change, push or flush (see
`run_aggregate_script`). The two kinds never share a runner: the same source compiles
differently (a plain script may declare its own `session`).

Why a notification rather than a return value: the script's `await`s resolve in V8's
microtask queue, which mini-racer drains *after* a call returns, outside its timeout.
So the batch reports its end through a callback, Python waits for it with its own
deadline, and on expiry closes the isolate, which terminates whatever still runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
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


@dataclass
class SessionChange:
    """What a batch did to the session of one key. `flushed`: the session was flushed
    (removed) at least once; `session`: the session after the batch, or None when it
    is gone, as {"data": {...}, "meta": {...}, "timeoutAt": ISO text or None,
    "createdAt": ISO text}. Flushed and present means a later record began it again."""

    flushed: bool
    session: dict[str, Any] | None


@dataclass
class AggregateOutcome:
    """`BatchOutcome` for a script aggregator, plus the sessions changed by records that
    went through (keys touched only by failed records are absent)."""

    records: list[RecordOutcome]
    state: dict[str, Any]
    sessions: dict[str, SessionChange]


# The two kinds of script a runner compiles (see `ScriptRunner`).
SCRIPT = "script"
AGGREGATE = "aggregate"
AGGREGATE_MODES = ("transform", "timeout")


class ScriptRunner:
    """One compiled script in its own V8 isolate. Not for use by two threads at once:
    `run_batch` and `run_aggregate_batch` hold the runner's lock. `kind` is SCRIPT (a
    `transforms/script`, run with `run_batch`) or AGGREGATE (a script aggregator's
    script, which also gets `session`, run with `run_aggregate_batch`)."""

    def __init__(self, source: str, kind: str = SCRIPT) -> None:
        if kind not in (SCRIPT, AGGREGATE):
            raise ValueError(f"Unknown script kind {kind!r}.")
        self.kind = kind
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
            self._start_batch = make_runner(notify, source, self.kind, timeout_sec=_SETUP_SECONDS)
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
        self._check_kind(SCRIPT)
        with self._lock:
            if self.compile_error is not None:
                return _all_failed(payloads, state, self.compile_error)
            if self._racer is None:
                raise SandboxClosed("This script runner was closed.")
            return self._run(payloads, state)

    def _run(self, payloads: list[Any], state: dict[str, Any]) -> BatchOutcome:
        try:
            text = self._call(
                json.encode(payloads).decode(),
                json.encode(state).decode(),
                settings.TALLY["STREAMS"]["SCRIPT_STATE_MAX_BYTES"],
            )
        except _LimitBroken as exc:
            return _all_failed(payloads, state, exc.reason)
        try:
            outcome = _parse_outcome(text, len(payloads))
        except json.InvalidJSON as exc:  # e.g. a pushed record nested too deep to read
            return _all_failed(payloads, state, f"The script's output is unusable: {exc.message}")
        if outcome.state is None:
            outcome.state = state
        return outcome

    def run_aggregate_batch(
        self,
        *,
        mode: str,
        payloads: list[Any],
        keys: list[str],
        sessions: dict[str, dict[str, Any]],
        state: dict[str, Any],
        now: str,
        default_timeout_at: str | None,
    ) -> AggregateOutcome:
        """`run_batch` for a script aggregator: record i runs with the session of
        `keys[i]`. `now` and `default_timeout_at` are ISO texts (see
        `run_aggregate_script`, which prepares them)."""
        self._check_kind(AGGREGATE)
        with self._lock:
            if self.compile_error is not None:
                return _all_failed_aggregate(payloads, state, self.compile_error)
            if self._racer is None:
                raise SandboxClosed("This script runner was closed.")
            # Only the sessions this batch reads cross into V8; in timeout mode the
            # script sees no payload, so none crosses.
            stored = {key: sessions[key] for key in dict.fromkeys(keys) if key in sessions}
            records = [None] * len(payloads) if mode == "timeout" else payloads
            try:
                text = self._call(
                    json.encode(records).decode(),
                    json.encode(keys).decode(),
                    json.encode(stored).decode(),
                    json.encode(state).decode(),
                    settings.TALLY["STREAMS"]["SCRIPT_STATE_MAX_BYTES"],
                    now,
                    mode,
                    default_timeout_at,
                )
            except _LimitBroken as exc:
                return _all_failed_aggregate(payloads, state, exc.reason)
            try:
                outcome = _parse_aggregate_outcome(text, len(payloads))
            except json.InvalidJSON as exc:
                reason = f"The script's output is unusable: {exc.message}"
                return _all_failed_aggregate(payloads, state, reason)
            if outcome.state is None:
                outcome.state = state
            return outcome

    def _check_kind(self, kind: str) -> None:
        if self.kind != kind:
            raise ValueError(f"This runner compiled a {self.kind!r} script, not a {kind!r} one.")

    def _call(self, *args: Any) -> str:
        """Start a batch in V8 with `args` and wait for its answer (JSON text). Raises
        _LimitBroken, having closed this runner, when the batch broke a limit or the
        isolate."""
        limit_ms = settings.TALLY["STREAMS"]["SCRIPT_TIME_LIMIT_MS"]
        memory_mb = settings.TALLY["STREAMS"]["SCRIPT_MEMORY_LIMIT_MB"]
        racer = self._racer
        racer.set_hard_memory_limit(memory_mb * 1024 * 1024)
        deadline = time.monotonic() + limit_ms / 1000
        self._finished.clear()
        self._result = None
        try:
            self._start_batch(*args, timeout_sec=limit_ms / 1000)
        except JSTimeoutException:
            raise self._give_up(_time_reason(limit_ms)) from None
        except JSOOMException:
            raise self._give_up(_memory_reason(memory_mb)) from None
        except JSEvalException as exc:
            # Records run inside a try, so only a broken limit or a broken isolate
            # gets here; V8 does not always say which limit it was.
            if racer.was_hard_memory_limit_reached():
                raise self._give_up(_memory_reason(memory_mb)) from None
            raise self._give_up(f"Script failed: {_first_line(exc)}") from None

        while not self._finished.wait(_POLL_SECONDS):
            if racer.was_hard_memory_limit_reached():
                raise self._give_up(_memory_reason(memory_mb))
            if time.monotonic() >= deadline:
                raise self._give_up(_time_reason(limit_ms))
        text = racer._ctx._value_handle_to_python(self._result)[0]
        self._result = None
        return text

    def _give_up(self, reason: str) -> _LimitBroken:
        self.close()
        return _LimitBroken(reason)


class _LimitBroken(Exception):
    """A batch broke the time or memory limit (or the isolate): every record fails."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxSetupError(Exception):
    """The sandbox itself could not be set up (not the script's fault)."""


class SandboxClosed(Exception):
    """A closed runner was asked to run a batch."""


def _all_failed(payloads: list[Any], state: dict[str, Any], reason: str) -> BatchOutcome:
    return BatchOutcome([RecordOutcome(error=reason) for _ in payloads], state)


def _all_failed_aggregate(
    payloads: list[Any], state: dict[str, Any], reason: str
) -> AggregateOutcome:
    return AggregateOutcome([RecordOutcome(error=reason) for _ in payloads], state, {})


def _parse_aggregate_outcome(text: str, expected: int) -> AggregateOutcome:
    decoded = json.loads_lenient(text)
    batch = _batch_outcome(decoded, expected)
    sessions = {
        key: SessionChange(flushed=change["flushed"], session=change["session"])
        for key, change in decoded.get("sessions", {}).items()
    }
    return AggregateOutcome(batch.records, batch.state, sessions)


def _parse_outcome(text: str, expected: int) -> BatchOutcome:
    return _batch_outcome(json.loads_lenient(text), expected)


def _batch_outcome(decoded: dict[str, Any], expected: int) -> BatchOutcome:
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
    """Compiled runners by (kind, operator, version, node, source hash), least recently
    used evicted first. A runner is never shared between keys, so two nodes (or
    operators) with the same script still get separate isolates."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._runners: OrderedDict[tuple, ScriptRunner] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        *,
        operator_id: uuid.UUID,
        version_id: uuid.UUID,
        node_id: str,
        source: str,
        kind: str = SCRIPT,
    ) -> ScriptRunner:
        digest = hashlib.sha256(source.encode()).hexdigest()
        key = (kind, operator_id, version_id, node_id, digest)
        with self._lock:
            runner = self._runners.get(key)
            if runner is not None and not runner.closed:
                self._runners.move_to_end(key)
                return runner
        # Build outside the lock: setup takes milliseconds and other keys need not wait.
        runner = ScriptRunner(source, kind)
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
    return _outside_running_loop(
        functools.partial(
            _run_cached,
            SCRIPT,
            (operator_id, version_id, node_id, source),
            lambda runner: runner.run_batch(payloads, state),
            lambda reason: _all_failed(payloads, state, reason),
        )
    )


def run_aggregate_script(
    *,
    operator_id: uuid.UUID,
    version_id: uuid.UUID,
    node_id: str,
    source: str,
    mode: str,
    payloads: list[Any],
    keys: list[str],
    sessions: dict[str, dict[str, Any]],
    state: dict[str, Any],
    now: datetime.datetime,
    default_timeout_seconds: float | None,
) -> AggregateOutcome:
    """Run a script aggregator's `source` over a batch with the cached runner for this
    node: record i (`payloads[i]`) with the session of `keys[i]`, in order.

    `sessions` holds the stored sessions of those keys (as `SessionChange.session`); a
    key without one starts a fresh session (empty data, `meta.count` 0, created `now`,
    due `default_timeout_seconds` after it, or never when None). In mode "transform"
    each record first counts in its session's meta (`count`, `firstEvent`,
    `lastEvent`); in mode "timeout" (a node's onTimeout script, for due sessions) the
    script gets `payload` null, `payloads` only giving the number of records, and meta
    is left alone. Never raises for the script's sake: what goes wrong fails records,
    and a failed record changes neither `state.node` nor its session."""
    if mode not in AGGREGATE_MODES:
        raise ValueError(f"Unknown script aggregator mode {mode!r}.")
    if len(payloads) != len(keys):
        raise ValueError(f"{len(payloads)} payloads but {len(keys)} session keys.")
    if now.tzinfo is None:
        raise ValueError("`now` must be an aware datetime.")
    default_timeout_at = (
        None
        if default_timeout_seconds is None
        else json.format_datetime(now + datetime.timedelta(seconds=default_timeout_seconds))
    )
    return _outside_running_loop(
        functools.partial(
            _run_cached,
            AGGREGATE,
            (operator_id, version_id, node_id, source),
            lambda runner: runner.run_aggregate_batch(
                mode=mode,
                payloads=payloads,
                keys=[str(key) for key in keys],
                sessions=sessions,
                state=state,
                now=json.format_datetime(now),
                default_timeout_at=default_timeout_at,
            ),
            lambda reason: _all_failed_aggregate(payloads, state, reason),
        )
    )


def _outside_running_loop(call: Callable[[], Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    # mini-racer's synchronous calls refuse to run in a thread whose asyncio loop is
    # running (an ASGI server, a test driving a browser): such callers lend a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def _run_cached(
    kind: str,
    ids: tuple[uuid.UUID, uuid.UUID, str, str],
    run: Callable[[ScriptRunner], Any],
    fail: Callable[[str], Any],
) -> Any:
    operator_id, version_id, node_id, source = ids
    for _attempt in range(2):
        try:
            runner = runners.get(
                operator_id=operator_id,
                version_id=version_id,
                node_id=node_id,
                source=source,
                kind=kind,
            )
            return run(runner)
        except SandboxSetupError as exc:
            return fail(f"The script sandbox could not start: {exc}")
        except SandboxClosed:  # evicted by another thread between get and run: again
            continue
    return fail("The script sandbox was closed while in use.")


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

return function setup(notify, source, kind) {
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
  const DateCtor = Date;
  const dateGetTime = Date.prototype.getTime;
  const dateToISOString = Date.prototype.toISOString;
  const MapCtor = Map;
  const SetCtor = Set;
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
  // A script aggregator's script also gets `session`; a plain script does not, so one
  // that declares its own `session` still compiles.
  let script;
  try {
    script = kind === "aggregate"
      ? new AsyncFunction("payload", "state", "push", "log", "require", "audit", "session",
        source)
      : new AsyncFunction("payload", "state", "push", "log", "require", "audit", source);
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
  function recordTools() {
    const tools = { pushed: [], logs: [], audits: [], open: true };
    tools.push = (record) => {
      if (!tools.open) {
        throw new ErrorCtor("push() was called after its record was done; await it");
      }
      const text = stringify(record);
      if (text === undefined) {
        throw new TypeErrorCtor("push() needs a JSON value, got " + typeof record);
      }
      arrayPush.call(tools.pushed, text);
    };
    const logAt = (level) => (...args) => {
      if (tools.open) arrayPush.call(tools.logs, [level, formatMessage(args)]);
    };
    tools.log = freeze({
      info: logAt("info"), warn: logAt("warn"), warning: logAt("warn"), error: logAt("error"),
    });
    const auditAt = (op) => (key, value) => {
      if (tools.open) {
        arrayPush.call(tools.audits, [op, StringCtor(key), op === "count" ? 1 : value]);
      }
    };
    tools.audit = freeze({ count: auditAt("count"), sum: auditAt("sum"), set: auditAt("set") });
    return tools;
  }

  function checkedNodeText(newNode, stateMaxBytes) {
    if (typeof newNode !== "object" || newNode === null || isArray(newNode)) {
      throw new Refusal("state.node must stay a JSON object");
    }
    const text = stringify(newNode);
    if (text.length > stateMaxBytes / 3 && utf8Length(text) > stateMaxBytes) {
      throw new Refusal("state.node is larger than " + stateMaxBytes + " bytes");
    }
    return text;
  }

  function donePart(tools) {
    return '{"pushed":[' + call.call(arrayJoin, tools.pushed, ",") + '],"logs":' +
      stringify(tools.logs) + ',"audit":' + stringify(tools.audits) + "}";
  }

  function failedPart(error, tools) {
    return '{"error":' + stringify(describe(error)) + ',"logs":' + stringify(tools.logs) + "}";
  }

  async function runBatch(recordsText, stateText, stateMaxBytes) {
    const records = parse(recordsText);
    let node = parse(stateText);
    let nodeText = stateText;
    const parts = [];
    for (let i = 0; i < records.length; i++) {
      const tools = recordTools();
      const state = { node };
      try {
        await call.call(script, undefined, records[i], state, tools.push, tools.log,
          requireModule, tools.audit);
        const newNode = state.node;
        const text = checkedNodeText(newNode, stateMaxBytes);
        node = newNode;
        nodeText = text;
        arrayPush.call(parts, donePart(tools));
      } catch (error) {
        // The record's effects are undone: its pushes are dropped, the state restored.
        node = parse(nodeText);
        arrayPush.call(parts, failedPart(error, tools));
      } finally {
        tools.open = false;
      }
    }
    return '{"records":[' + call.call(arrayJoin, parts, ",") + '],"state":' + nodeText + "}";
  }

  // 6. Script aggregators: each record also gets the session of its key.

  // The JSON text of `value` when it is a JSON object, else undefined.
  function objectText(value) {
    const text = stringify(value);
    return typeof text === "string" && text[0] === "{" ? text : undefined;
  }

  function shortly(text) {
    return text.length > 40 ? call.call(slice, text, 0, 40) + "..." : text;
  }

  // session.setTimeout(t): a Date, a moment, an ISO 8601 string (UTC unless it says
  // otherwise) or epoch milliseconds; anything else is the script's mistake.
  function timeoutMillis(value) {
    let ms;
    if (value instanceof DateCtor) {
      ms = call.call(dateGetTime, value);
    } else if (moment.isMoment(value)) {
      ms = value.valueOf();
    } else if (typeof value === "number") {
      ms = value;
    } else if (typeof value === "string") {
      const parsed = moment.utc(value, moment.ISO_8601, true);
      if (!parsed.isValid()) {
        throw new TypeErrorCtor("session.setTimeout() got \"" + shortly(value) +
          "\", which is not an ISO 8601 date");
      }
      ms = parsed.valueOf();
    } else {
      throw new TypeErrorCtor("session.setTimeout() needs a Date, a moment, an ISO 8601 " +
        "string or epoch milliseconds, got " + (value === null ? "null" : typeof value));
    }
    // The range of a JavaScript Date; NaN (an invalid Date or moment) fails it too.
    if (typeof ms !== "number" || !(ms >= -8.64e15 && ms <= 8.64e15)) {
      throw new TypeErrorCtor("session.setTimeout() got an invalid date");
    }
    return ms;
  }

  // The `session` one record sees, begun from `before` (its stored JSON text, or null
  // for a fresh one). `end()` gives its JSON text after the record, or null when the
  // record flushed it; nothing reaches the batch's result unless the record succeeds.
  function openSession(key, before, tools, mode, nowText, defaultTimeoutAt) {
    const stored = before === null ? null : parse(before);
    const fresh = stored === null || typeof stored !== "object";
    const createdAt = fresh || typeof stored.createdAt !== "string" ? nowText : stored.createdAt;
    let timeoutAt = fresh ? defaultTimeoutAt : (stored.timeoutAt ?? null);
    const data = !fresh && objectText(stored.data) !== undefined ? stored.data : {};
    const meta = !fresh && objectText(stored.meta) !== undefined ? stored.meta : { count: 0 };
    if (mode === "transform") {
      meta.count = (typeof meta.count === "number" ? meta.count : 0) + 1;
      if (meta.firstEvent == null) meta.firstEvent = nowText;
      meta.lastEvent = nowText;
    }
    let flushed = false;

    const session = {};
    defineProperty(session, "key", { value: key, enumerable: true });
    session.data = data;
    session.meta = meta;
    defineProperty(session, "timeoutAt", { get: () => timeoutAt, enumerable: true });

    // After a flush the session is gone: changes to this object are ignored, and
    // pushing or flushing it again is a mistake worth an error.
    function check(name) {
      if (!tools.open) {
        throw new ErrorCtor("session." + name + "() was called after its record was done; " +
          "await it");
      }
      if (flushed) {
        throw new ErrorCtor("session." + name + "() was called after the session was flushed");
      }
    }
    function emitData(name) {
      const text = objectText(session.data);
      if (text === undefined) {
        throw new TypeErrorCtor("session." + name + "() needs session.data to be a JSON object");
      }
      arrayPush.call(tools.pushed, text);
    }
    const methods = {
      // The reference product's arguments (excludeCurrentPayload, flushType) are
      // accepted and have no effect here.
      push: async (excludeCurrentPayload, flushType) => {
        check("push");
        emitData("push");
      },
      flush: async (excludeCurrentPayload, flushType) => {
        check("flush");
        emitData("flush");
        flushed = true;
      },
      setTimeout: (value) => {
        const ms = timeoutMillis(value);
        if (tools.open && !flushed) timeoutAt = call.call(dateToISOString, new DateCtor(ms));
      },
      clearTimeout: () => {
        if (tools.open && !flushed) timeoutAt = null;
      },
    };
    for (const name of getOwnPropertyNames(methods)) {
      defineProperty(session, name, { value: freeze(methods[name]) });
    }

    function end(stateMaxBytes) {
      if (flushed) return null;
      const dataText = objectText(session.data);
      if (dataText === undefined) throw new Refusal("session.data must stay a JSON object");
      const metaText = objectText(session.meta);
      if (metaText === undefined) throw new Refusal("session.meta must stay a JSON object");
      const body = '{"data":' + dataText + ',"meta":' + metaText + "}";
      if (body.length > stateMaxBytes / 3 && utf8Length(body) > stateMaxBytes) {
        throw new Refusal("the session is larger than " + stateMaxBytes + " bytes");
      }
      return call.call(slice, body, 0, -1) + ',"timeoutAt":' + stringify(timeoutAt) +
        ',"createdAt":' + stringify(createdAt) + "}";
    }

    return { session, end, flushed: () => flushed };
  }

  async function runAggregate(recordsText, keysText, sessionsText, stateText, stateMaxBytes,
      nowText, mode, defaultTimeoutAt) {
    const records = parse(recordsText);
    const keys = parse(keysText);
    const stored = parse(sessionsText);
    let node = parse(stateText);
    let nodeText = stateText;
    // For each key a successful record touched: its session's JSON text after that
    // record (null once flushed), and whether it was flushed along the way.
    const after = new MapCtor();
    const flushedKeys = new SetCtor();
    const parts = [];
    for (let i = 0; i < records.length; i++) {
      const key = StringCtor(keys[i]);
      let before = null;
      if (after.has(key)) before = after.get(key);
      else if (hasOwn.call(stored, key)) before = stringify(stored[key]);
      const tools = recordTools();
      const state = { node };
      try {
        const handle = openSession(key, before, tools, mode, nowText, defaultTimeoutAt);
        await call.call(script, undefined, mode === "timeout" ? null : records[i], state,
          tools.push, tools.log, requireModule, tools.audit, handle.session);
        const newNode = state.node;
        const text = checkedNodeText(newNode, stateMaxBytes);
        const sessionText = handle.end(stateMaxBytes);
        node = newNode;
        nodeText = text;
        after.set(key, sessionText);
        if (handle.flushed()) flushedKeys.add(key);
        arrayPush.call(parts, donePart(tools));
      } catch (error) {
        // As in runBatch; the session was never written back, so it stays as it was.
        node = parse(nodeText);
        arrayPush.call(parts, failedPart(error, tools));
      } finally {
        tools.open = false;
      }
    }
    const sessionParts = [];
    for (const [key, text] of after) {
      arrayPush.call(sessionParts, stringify(key) + ':{"flushed":' +
        (flushedKeys.has(key) ? "true" : "false") + ',"session":' +
        (text === null ? "null" : text) + "}");
    }
    return '{"records":[' + call.call(arrayJoin, parts, ",") + '],"state":' + nodeText +
      ',"sessions":{' + call.call(arrayJoin, sessionParts, ",") + "}}";
  }

  function report(promise) {
    promise.then(
      (text) => notify(text),
      (error) => notify(stringify({ fatal: describe(error) })),
    );
  }

  if (kind === "aggregate") {
    return function startAggregate(recordsText, keysText, sessionsText, stateText,
        stateMaxBytes, nowText, mode, defaultTimeoutAt) {
      report(runAggregate(recordsText, keysText, sessionsText, stateText, stateMaxBytes,
        nowText, mode, defaultTimeoutAt));
    };
  }
  return function startBatch(recordsText, stateText, stateMaxBytes) {
    report(runBatch(recordsText, stateText, stateMaxBytes));
  };
};
})()
"""
