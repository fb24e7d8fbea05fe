"""`transforms/script_aggregate`: records grouped into sessions, folded by JavaScript.

Params (no export of this function has been published; these names are Tally's and
documented in README, "Running streams"):

* `groupByRules`: `[{"fields": ["customerId", "orderId"]}, ...]`. The first rule whose
  fields a record all has gives its session key (the values in field order, see
  `sessions.session_key`); a record matching no rule fails.
* `onTransform`: the script run for each record, in the sandbox of `transforms/script`,
  with `session` besides `payload`, `state.node`, `push`, `log`, `audit`, `require`:
  `session.key`, `session.data`, `session.meta` (count, firstEvent, lastEvent and any
  custom property), `session.timeoutAt`, `session.setTimeout(t)`,
  `session.clearTimeout()`, `await session.push()` (sends `data` on, keeps the session)
  and `await session.flush()` (sends `data` on and ends the session).
* `timeout`: `{value, unit}`: a new session's `timeoutAt`, counted from its creation.
* `onTimeout`: run by Beat for each session past its `timeoutAt` (payload null). A
  session it neither flushes nor gives a later timeout is then flushed by Tally.

Sessions are rows of the node's aggregation store, changed in the batch's transaction.
"""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any

from collection.processing import ProcessorRetry
from common.json import format_datetime
from streams.runtime import sandbox
from streams.runtime import sessions as store
from streams.runtime.base import Emit, Function, Item, function
from streams.runtime.functions.aggregate import timeout_of
from streams.runtime.functions.basic import ConfigurationError
from streams.runtime.paths import MISSING, Path, get_path, parse_path

FLUSHED_BY_SCRIPT = "FLUSH"


class FlushTaken(ProcessorRetry):
    """Another transaction flushed a session this batch was about to flush."""


def group_rules(params: dict[str, Any]) -> list[list[str]]:
    """The group-by rules as lists of field names."""
    rules = []
    for index, rule in enumerate(params.get("groupByRules") or []):
        fields = rule.get("fields") if isinstance(rule, dict) else rule
        if not isinstance(fields, list) or not fields:
            raise ConfigurationError(f"groupByRules[{index}] needs a non-empty list of fields")
        names = []
        for entry in fields:
            name = entry.get("field") if isinstance(entry, dict) else entry
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"groupByRules[{index}]: fields must be field names")
            names.append(name)
        rules.append(names)
    if not rules:
        raise ConfigurationError("groupByRules needs at least one rule")
    return rules


def session_view(session: store.StoredSession) -> dict[str, Any]:
    """A stored session as the sandbox takes it."""
    return {
        "data": session.data,
        "meta": session.meta,
        "timeoutAt": format_datetime(session.timeout_at),
        "createdAt": format_datetime(session.created_at),
    }


def parse_time(text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    return datetime.datetime.fromisoformat(text).astimezone(datetime.UTC)


@function("transforms/script_aggregate")
class ScriptAggregate(Function):
    # Not replayed on a re-run: its sessions are database rows the savepoint rolled
    # back, so it must run again over the surviving records to redo them.
    replay_on_rerun = False

    @cached_property
    def rules(self) -> list[tuple[list[str], list[Path]]]:
        return [(names, [parse_path(name) for name in names]) for names in group_rules(self.params)]

    def key_of(self, payload: Any) -> tuple[str, list[Any]] | None:
        for _, paths in self.rules:
            values = [get_path(payload, path, MISSING) for path in paths]
            if all(value is not MISSING for value in values):
                return store.session_key(values), values
        return None

    def process(self, items: list[Item], emit: Emit) -> None:
        ctx = self.ctx
        source = self.params.get("onTransform")
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError("onTransform is required")
        timeout = timeout_of(self.params)
        store_id = ctx.keys.get("storeId")
        if store_id is None:
            raise ConfigurationError("this node has no aggregation store")
        keyed: list[tuple[Item, str]] = []
        wanted: dict[str, list[Any]] = {}
        for item in items:
            found = self.key_of(item.payload)
            if found is None:
                fields = " or ".join("+".join(names) for names, _ in self.rules)
                emit.fail(item, f"the record has none of the group-by fields ({fields})")
                continue
            keyed.append((item, found[0]))
            wanted.setdefault(found[0], found[1])
        if not keyed:
            return
        stored = store.sessions_for(ctx, store_id=store_id, keys=wanted, timeout=timeout)
        outcome = sandbox.run_aggregate_script(
            operator_id=ctx.operator_id,
            version_id=ctx.version_id,
            node_id=ctx.node_id,
            source=source,
            mode="transform",
            payloads=[item.payload for item, _ in keyed],
            keys=[key for _, key in keyed],
            sessions={key: session_view(session) for key, session in stored.items()},
            state=ctx.state,
            now=ctx.now,
            default_timeout_seconds=timeout.total_seconds() if timeout else None,
        )
        for (item, _), record in zip(keyed, outcome.records, strict=True):
            for level, message in record.logs:
                ctx.log(level, message)
            if record.error is not None:
                emit.fail(item, record.error)
                continue
            for pushed in record.pushed:
                emit(Item(pushed, item.origin))
        if outcome.state is not ctx.state:
            ctx.state.clear()
            ctx.state.update(outcome.state)
        sessions_apply(
            ctx,
            store_id=store_id,
            stored=stored,
            changes=outcome.sessions,
            values=wanted,
            flush_type=FLUSHED_BY_SCRIPT,
        )


def sessions_apply(ctx, *, store_id, stored, changes, values, flush_type) -> None:
    """Write what a script did to its sessions: updates, flushes (each claimed once; a
    claim lost to another transaction gives the batch back to the queue) and sessions
    begun again after a flush."""
    updated: list[store.StoredSession] = []
    ended: list[store.StoredSession] = []
    begun: list[store.StoredSession] = []
    for key, change in changes.items():
        previous = stored.get(key)
        after = change.session
        if change.flushed and previous is not None:
            ended.append(previous)
        if after is None:
            continue
        session = store.StoredSession(
            None if change.flushed or previous is None else previous.id,
            key,
            values.get(key, previous.key_values if previous else []),
            after["data"],
            after["meta"],
            parse_time(after.get("createdAt")) or ctx.now,
            parse_time(after.get("timeoutAt")),
        )
        (begun if session.id is None else updated).append(session)
    if not ctx.side_effects:
        for session in [*updated, *begun]:
            ctx.changes.append({"store": store_id, "key": session.key, "data": session.data})
        for session in ended:
            ctx.changes.append({"store": store_id, "key": session.key, "flushed": True})
        return
    won = store.sessions_flush(
        operator_id=ctx.operator_id,
        store_id=store_id,
        sessions=ended,
        flush_type=flush_type,
        now=ctx.now,
    )
    if len(won) != len([session for session in ended if session.id is not None]):
        raise FlushTaken("A session was flushed by another worker meanwhile.")
    store.sessions_save(updated, now=ctx.now)
    store.sessions_insert(
        operator_id=ctx.operator_id, store_id=store_id, sessions=begun, now=ctx.now
    )


def on_timeout_run(ctx, *, store_id, source: str, stored: dict) -> list[list[Any]]:
    """Run `onTimeout` over a store's due sessions (rows held FOR UPDATE by the caller)
    and write what became of them; returns, per session that sends anything, its
    records. A session the script neither flushes nor gives a later timeout is flushed
    with its data; one whose script fails is flushed as it is."""
    keys = list(stored)
    views = {key: session_view(session) for key, session in stored.items()}
    outcome = sandbox.run_aggregate_script(
        operator_id=ctx.operator_id,
        version_id=ctx.version_id,
        node_id=ctx.node_id,
        source=source,
        mode="timeout",
        payloads=[None] * len(keys),
        keys=keys,
        sessions=views,
        state=ctx.state,
        now=ctx.now,
        default_timeout_seconds=None,
    )
    emitted: dict[str, list[Any]] = {key: [] for key in keys}
    changes = dict(outcome.sessions)
    for key, record in zip(keys, outcome.records, strict=True):
        for level, message in record.logs:
            ctx.log(level, message)
        if record.error is not None:
            ctx.log("error", f"onTimeout failed for session {key!r}: {record.error}")
            changes.pop(key, None)
            continue
        emitted[key].extend(record.pushed)
    for key, session in stored.items():
        change = changes.get(key)
        after = change.session if change is not None else views[key]
        flushed = change is not None and change.flushed
        later = after is not None and (parse_time(after.get("timeoutAt")) or ctx.now) > ctx.now
        if not flushed and not later:
            emitted[key].append(after["data"] if after is not None else session.data)
            changes[key] = sandbox.SessionChange(flushed=True, session=None)
    # The rows are the caller's (FOR UPDATE): every claim is ours, and a lost one
    # (FlushTaken) rolls the whole flush back.
    sessions_apply(
        ctx,
        store_id=store_id,
        stored=stored,
        changes=changes,
        values={key: session.key_values for key, session in stored.items()},
        flush_type="TIMEOUT",
    )
    return [emitted[key] for key in keys if emitted[key]]
