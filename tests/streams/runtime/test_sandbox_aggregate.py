"""The sandbox running a script aggregator's JavaScript: `session` per record key, its
push/flush/timeouts, and the same all-or-nothing record semantics as plain scripts."""

from __future__ import annotations

import datetime
import time
import uuid
from decimal import Decimal

import pytest

from streams.runtime import sandbox

NOW = datetime.datetime(2025, 10, 27, 14, 4, 31, 648000, tzinfo=datetime.UTC)
NOW_TEXT = "2025-10-27T14:04:31.648Z"
TIME_LIMIT_MS = 300


@pytest.fixture(autouse=True)
def _fresh_runners():
    yield
    sandbox.runners.clear()


@pytest.fixture
def node_ids():
    return {"operator_id": uuid.uuid4(), "version_id": uuid.uuid4(), "node_id": "aggregate"}


def aggregate(
    source: str,
    keys: list[str],
    payloads: list | None = None,
    *,
    sessions: dict | None = None,
    state: dict | None = None,
    mode: str = "transform",
    now: datetime.datetime = NOW,
    default_timeout_seconds: float | None = None,
    ids: dict | None = None,
) -> sandbox.AggregateOutcome:
    ids = ids or {"operator_id": uuid.uuid4(), "version_id": uuid.uuid4(), "node_id": "agg"}
    return sandbox.run_aggregate_script(
        **ids,
        source=source,
        mode=mode,
        payloads=[{} for _ in keys] if payloads is None else payloads,
        keys=keys,
        sessions={} if sessions is None else sessions,
        state={} if state is None else state,
        now=now,
        default_timeout_seconds=default_timeout_seconds,
    )


def stored(outcome: sandbox.AggregateOutcome) -> dict:
    """The sessions after the batch, as the caller would save them."""
    return {key: change.session for key, change in outcome.sessions.items() if change.session}


def errors(outcome: sandbox.AggregateOutcome) -> dict[int, str]:
    return {i: record.error for i, record in enumerate(outcome.records) if record.error}


def pushed(outcome: sandbox.AggregateOutcome) -> list:
    return [record for outcome_record in outcome.records for record in outcome_record.pushed]


SUM = "session.data.total = (session.data.total || 0) + payload.n;"


def test_sessions_count_per_key_across_two_batches(node_ids):
    first = aggregate(SUM, ["a", "b", "a"], [{"n": 1}, {"n": 10}, {"n": 2}], ids=node_ids)
    assert not errors(first)
    assert {key: session["data"] for key, session in stored(first).items()} == {
        "a": {"total": 3},
        "b": {"total": 10},
    }

    later = NOW + datetime.timedelta(minutes=5)
    second = aggregate(
        SUM,
        ["a", "c"],
        [{"n": Decimal("0.5")}, {"n": 7}],
        sessions=stored(first),
        now=later,
        ids=node_ids,
    )
    sessions = stored(second)
    assert set(sessions) == {"a", "c"}  # b was not touched by this batch
    assert sessions["a"]["data"] == {"total": Decimal("3.5")}
    assert sessions["a"]["meta"]["count"] == 3
    assert sessions["a"]["createdAt"] == NOW_TEXT
    assert sessions["c"]["createdAt"] == "2025-10-27T14:09:31.648Z"
    assert second.sessions["a"].flushed is False


def test_meta_counts_records_and_keeps_first_and_last_event(node_ids):
    source = "session.meta.source = session.meta.source || payload.source;"
    first = aggregate(source, ["a"], [{"source": "api"}], ids=node_ids)
    assert stored(first)["a"]["meta"] == {
        "count": 1,
        "firstEvent": NOW_TEXT,
        "lastEvent": NOW_TEXT,
        "source": "api",
    }

    later = NOW + datetime.timedelta(hours=1)
    second = aggregate(
        source, ["a", "a"], [{"source": "x"}] * 2, sessions=stored(first), now=later, ids=node_ids
    )
    assert stored(second)["a"]["meta"] == {
        "count": 3,
        "firstEvent": NOW_TEXT,
        "lastEvent": "2025-10-27T15:04:31.648Z",
        "source": "api",
    }


def test_the_script_sees_its_key_and_the_meta_already_counted():
    outcome = aggregate(
        "await push({key: session.key, count: session.meta.count}); session.key = 'other';",
        ["a", "a"],
    )
    assert pushed(outcome) == [{"key": "a", "count": 1}, {"key": "a", "count": 2}]
    assert set(outcome.sessions) == {"a"}


def test_session_push_emits_a_copy_of_the_data_and_keeps_the_session():
    outcome = aggregate(
        "session.data.n = payload.n;\n"
        "await push({plain: payload.n});\n"
        "await session.push(true, 'EACH_FILE');\n"
        "session.data.n = payload.n * 100;",
        ["a", "a"],
        [{"n": 1}, {"n": 2}],
    )
    assert [record.pushed for record in outcome.records] == [
        [{"plain": 1}, {"n": 1}],
        [{"plain": 2}, {"n": 2}],
    ]
    assert outcome.sessions["a"].flushed is False
    assert outcome.sessions["a"].session["data"] == {"n": 200}


def test_flush_removes_the_session_and_a_later_record_of_the_key_starts_fresh():
    outcome = aggregate(
        "session.data.n = (session.data.n || 0) + 1;\n"
        "if (payload.flush) { await session.flush(); session.data.n = 99; }",
        ["a", "a", "a"],
        [{}, {"flush": True}, {}],
        default_timeout_seconds=60,
    )
    assert not errors(outcome)
    assert [record.pushed for record in outcome.records] == [[], [{"n": 2}], []]
    change = outcome.sessions["a"]
    assert change.flushed is True
    assert change.session["data"] == {"n": 1}  # begun again by the third record
    assert change.session["meta"]["count"] == 1
    assert change.session["createdAt"] == NOW_TEXT
    assert change.session["timeoutAt"] == "2025-10-27T14:05:31.648Z"


def test_flush_as_the_last_record_leaves_no_session():
    outcome = aggregate(
        "session.data.seen = true; await session.flush();",
        ["a"],
        sessions={
            "a": {
                "data": {"old": 1},
                "meta": {"count": 4},
                "timeoutAt": None,
                "createdAt": NOW_TEXT,
            }
        },
    )
    assert pushed(outcome) == [{"old": 1, "seen": True}]
    assert outcome.sessions["a"] == sandbox.SessionChange(flushed=True, session=None)


@pytest.mark.parametrize("again", ["push", "flush"])
def test_a_flushed_session_cannot_be_pushed_or_flushed_again(again):
    outcome = aggregate(f"await session.flush(); await session.{again}();", ["a"])
    assert errors(outcome) == {
        0: f"Error: session.{again}() was called after the session was flushed"
    }
    assert outcome.sessions == {}


def test_a_throwing_record_restores_its_session_and_state_and_drops_its_pushes():
    source = (
        "state.node.seen = (state.node.seen || 0) + 1;\n"
        "session.data.n = (session.data.n || 0) + 1;\n"
        "await push({n: session.data.n});\n"
        "if (payload.bad) { await session.flush(); throw new Error('bad record'); }"
    )
    outcome = aggregate(
        source,
        ["a", "a", "b", "a"],
        [{}, {"bad": True}, {"bad": True}, {}],
        state={"seen": 10},
    )

    assert errors(outcome) == {1: "Error: bad record", 2: "Error: bad record"}
    assert [record.pushed for record in outcome.records] == [[{"n": 1}], [], [], [{"n": 2}]]
    assert outcome.state == {"seen": 12}
    # The failed flush is undone: record 4 carries on from record 1's session.
    assert outcome.sessions["a"].flushed is False
    assert outcome.sessions["a"].session["data"] == {"n": 2}
    assert outcome.sessions["a"].session["meta"]["count"] == 2
    # A key touched only by a failed record has nothing to save.
    assert "b" not in outcome.sessions


@pytest.mark.parametrize(
    "argument",
    [
        "new Date(Date.UTC(2025, 10, 1, 8, 30))",
        "'2025-11-01T10:30:00+02:00'",
        "'2025-11-01T08:30:00Z'",
        "Date.UTC(2025, 10, 1, 8, 30)",
        "require('moment').utc('2025-11-01 08:30', 'YYYY-MM-DD HH:mm')",
        "require('moment').utc(payload.now).add(5, 'days').subtract(5, 'hours')"
        ".subtract(34, 'minutes').subtract(31648, 'ms')",
    ],
    ids=["date", "iso-with-offset", "iso-utc", "epoch-ms", "moment", "moment-arithmetic"],
)
def test_set_timeout_takes_a_date_iso_text_epoch_ms_or_moment(argument):
    outcome = aggregate(
        f"session.setTimeout({argument}); await push({{at: session.timeoutAt}});",
        ["a"],
        [{"now": NOW_TEXT}],
    )
    assert not errors(outcome)
    assert pushed(outcome) == [{"at": "2025-11-01T08:30:00.000Z"}]
    assert outcome.sessions["a"].session["timeoutAt"] == "2025-11-01T08:30:00.000Z"


def test_clear_timeout_removes_the_timeout_and_timeout_at_is_read_only():
    outcome = aggregate(
        "session.timeoutAt = '2030-01-01T00:00:00.000Z'; session.clearTimeout();",
        ["a"],
        default_timeout_seconds=60,
    )
    assert not errors(outcome)
    assert outcome.sessions["a"].session["timeoutAt"] is None


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("'next tuesday'", 'got "next tuesday", which is not an ISO 8601 date'),
        ("{}", "needs a Date, a moment, an ISO 8601 string or epoch milliseconds, got object"),
        ("null", "got null"),
        ("true", "got boolean"),
        ("new Date('nonsense')", "got an invalid date"),
        ("NaN", "got an invalid date"),
        ("1e300", "got an invalid date"),
        ("require('moment')('nonsense', 'YYYY', true)", "got an invalid date"),
    ],
)
def test_set_timeout_refuses_what_is_not_a_date(argument, reason):
    sessions = {
        "a": {
            "data": {"kept": 1},
            "meta": {"count": 1},
            "timeoutAt": "2025-10-28T00:00:00.000Z",
            "createdAt": NOW_TEXT,
        }
    }
    outcome = aggregate(f"session.setTimeout({argument});", ["a"], sessions=sessions)
    (error,) = errors(outcome).values()
    assert error.startswith("TypeError: session.setTimeout() ")
    assert reason in error
    assert outcome.sessions == {}


def test_a_fresh_session_gets_the_default_timeout_and_a_stored_one_keeps_its_own():
    existing = {
        "data": {},
        "meta": {"count": 1},
        "timeoutAt": "2025-12-01T00:00:00.000Z",
        "createdAt": "2025-10-01T00:00:00.000Z",
    }
    outcome = aggregate(
        "", ["new", "old"], sessions={"old": existing}, default_timeout_seconds=90.5
    )
    assert outcome.sessions["new"].session["timeoutAt"] == "2025-10-27T14:06:02.148Z"
    assert outcome.sessions["old"].session["timeoutAt"] == "2025-12-01T00:00:00.000Z"
    assert outcome.sessions["old"].session["createdAt"] == "2025-10-01T00:00:00.000Z"

    without = aggregate("", ["new"], default_timeout_seconds=None)
    assert without.sessions["new"].session["timeoutAt"] is None


def test_timeout_mode_runs_with_a_null_payload_and_leaves_meta_alone():
    session = {
        "data": {"total": 5},
        "meta": {
            "count": 3,
            "firstEvent": "2025-10-01T00:00:00.000Z",
            "lastEvent": "2025-10-02T00:00:00.000Z",
        },
        "timeoutAt": "2025-10-27T14:00:00.000Z",
        "createdAt": "2025-10-01T00:00:00.000Z",
    }
    outcome = aggregate(
        "if (payload !== null) throw new Error('payload given');\n"
        "log.info('timed out: %s after %d records', session.key, session.meta.count);\n"
        "if (session.key === 'a') await session.flush();\n"
        "else session.setTimeout(Date.parse(session.timeoutAt) + 60000);",
        ["a", "b"],
        [{"ignored": True}, None],
        sessions={"a": session, "b": session},
        mode="timeout",
    )
    assert not errors(outcome)
    assert outcome.records[0].pushed == [{"total": 5}]
    assert outcome.records[0].logs == [("info", "timed out: a after 3 records")]
    assert outcome.sessions["a"] == sandbox.SessionChange(flushed=True, session=None)
    assert outcome.sessions["b"].session == {**session, "timeoutAt": "2025-10-27T14:01:00.000Z"}


def test_session_data_may_be_replaced_by_another_object():
    outcome = aggregate("session.data = {fresh: payload.n};", ["a"], [{"n": 4}])
    assert outcome.sessions["a"].session["data"] == {"fresh": 4}


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("session.data = [1, 2]", "session.data must stay a JSON object"),
        ("session.data = null", "session.data must stay a JSON object"),
        ("session.data = 5", "session.data must stay a JSON object"),
        ("session.data = new Date()", "session.data must stay a JSON object"),
        ("session.meta = 'x'", "session.meta must stay a JSON object"),
    ],
)
def test_a_session_that_is_not_a_json_object_refuses_the_record(assignment, reason):
    outcome = aggregate(f"state.node.touched = true; {assignment};", ["a", "b"], [{}, {}], state={})
    assert errors(outcome) == {0: reason, 1: reason}
    assert outcome.sessions == {}
    assert outcome.state == {}


def test_pushing_a_session_whose_data_is_not_an_object_fails_the_record():
    outcome = aggregate("session.data = 'text'; await session.push();", ["a"])
    assert errors(outcome) == {
        0: "TypeError: session.push() needs session.data to be a JSON object"
    }


def test_a_session_over_the_size_cap_refuses_the_record(settings):
    settings.TALLY["STREAMS"]["SCRIPT_STATE_MAX_BYTES"] = 1024
    outcome = aggregate(
        "session.data.text = (session.data.text || '') + payload.text;",
        ["a", "a", "a"],
        [{"text": "x" * 400}, {"text": "é" * 400}, {"text": "y" * 10}],
    )
    # 400 + 800 bytes is over the cap: the second record fails, the third goes on.
    assert errors(outcome) == {1: "the session is larger than 1024 bytes"}
    assert outcome.sessions["a"].session["data"] == {"text": "x" * 400 + "y" * 10}


def test_an_infinite_loop_fails_every_record_and_changes_no_session(settings):
    settings.TALLY["STREAMS"]["SCRIPT_TIME_LIMIT_MS"] = TIME_LIMIT_MS
    existing = {"data": {"n": 1}, "meta": {"count": 1}, "timeoutAt": None, "createdAt": NOW_TEXT}
    started = time.monotonic()
    outcome = aggregate(
        "session.data.n += 1; state.node.n = 1; await session.push();\n"
        "if (payload.loop) { while (true) {} }",
        ["a", "a"],
        [{}, {"loop": True}],
        sessions={"a": existing},
        state={"kept": True},
    )
    assert time.monotonic() - started < 3

    reason = f"script time limit of {TIME_LIMIT_MS} ms exceeded"
    assert errors(outcome) == {0: reason, 1: reason}
    assert pushed(outcome) == []
    assert outcome.sessions == {}
    assert outcome.state == {"kept": True}
    assert existing["data"] == {"n": 1}


def test_a_script_that_does_not_compile_fails_every_record():
    outcome = aggregate("await session.push(", ["a", "b"])
    assert set(errors(outcome)) == {0, 1}
    assert errors(outcome)[0].startswith("SyntaxError:")
    assert outcome.sessions == {}


def test_a_plain_script_may_still_declare_its_own_session():
    outcome = sandbox.run_script(
        operator_id=uuid.uuid4(),
        version_id=uuid.uuid4(),
        node_id="script",
        source="let session = 1; session += payload.n; await push({session});",
        payloads=[{"n": 2}],
        state={},
    )
    assert [record.error for record in outcome.records] == [None]
    assert outcome.records[0].pushed == [{"session": 3}]


def test_plain_and_aggregate_scripts_of_one_node_get_separate_runners(node_ids):
    source = "await push({kind: typeof session});"
    plain = sandbox.run_script(**node_ids, source=source, payloads=[{}], state={})
    aggregated = aggregate(source, ["a"], ids=node_ids)
    assert plain.records[0].pushed == [{"kind": "undefined"}]
    assert pushed(aggregated) == [{"kind": "object"}]
    assert sandbox.runners.get(**node_ids, source=source) is not sandbox.runners.get(
        **node_ids, source=source, kind=sandbox.AGGREGATE
    )


def test_aggregate_scripts_run_for_callers_inside_a_running_event_loop():
    import asyncio

    async def caller():
        return aggregate(SUM, ["a"], [{"n": 1}])

    outcome = asyncio.run(caller())
    assert outcome.sessions["a"].session["data"] == {"total": 1}
