# ruff: noqa: S608 - the SQL here is metric queries and attacks on the sandbox, by design
"""The SQL metrics sandbox (`reporting.sandbox`): right values over the operator's
processed records of one customer, a corpus of hostile SQL refused or harmless, and the
database layer holding on its own when the parser is bypassed.

The scene (acme and globex are the two operators; hours from 2024-07-01 00:00 UTC):

    acme c1   h0 api_call n=10 · h1 api_call n=2.5 · h2 api_call n=7 · h3 login n=100
              h4, h5, h6 api_call n=1000, FAILED, UNPROCESSED and IN_PROGRESS
    acme c2   h1 api_call n=500
    globex c1 h1 api_call n=9999, with a "secret" that is not a number
"""

from __future__ import annotations

import importlib
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from collection.models import Record
from reporting import sandbox
from reporting.sandbox import (
    EVENTS_COLUMNS,
    SqlFailed,
    SqlRejected,
    _sandboxed_execute,
    _sql_compile,
    _wrapped,
    sql_check,
    sql_metric_run,
)
from tests.factories import CollectorFactory, OperatorFactory
from tests.reporting.metric_records import records_insert

pytestmark = pytest.mark.django_db

BASE = datetime(2024, 7, 1, tzinfo=UTC)
GLOBEX_SECRET = "globex-secret-do-not-show"
ROLE = "tally_metrics_sandbox"


def at(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def record(hours, *, n, customer="c1", type="api_call", status=3, **payload) -> dict:
    return {
        "type": type,
        "customer_id": customer,
        "event_time": at(hours),
        "payload": {"n": Decimal(str(n)), **payload},
        "status": status,
    }


@pytest.fixture
def scene(acme, globex):
    acme_records = [
        record(0, n=10, name="apple", secret=1),
        record(1, n=2.5, name="avocado", secret=2),
        record(2, n=7, name="banana", secret=3),
        record(3, n=100, type="login", name="%(customer)s"),
        record(4, n=1000, status=Record.Status.FAILED),
        record(5, n=1000, status=Record.Status.UNPROCESSED),
        record(6, n=1000, status=Record.Status.IN_PROGRESS),
        record(1, n=500, customer="c2"),
    ]
    records_insert(
        operator=acme.operator,
        collector=CollectorFactory(operator=acme.operator),
        records=acme_records,
    )
    records_insert(
        operator=globex.operator,
        collector=CollectorFactory(operator=globex.operator),
        records=[record(1, n=9999, secret=GLOBEX_SECRET)],
    )
    return acme, globex


def run(tenant, sql: str, customer: str = "c1", start=None, end=None):
    return sql_metric_run(
        operator_id=tenant.operator.pk, customer_id=customer, start=start, end=end, sql=sql
    )


def raw(tenant, sql: str):
    """`sql` run by the database layer alone, the parser skipped: the first value."""
    rows = _sandboxed_execute(operator_id=tenant.operator.pk, sql=_wrapped(sql))
    return rows[0][1] if rows else None


def database_error(sql: str, params=(), *, role: str | None = None) -> psycopg.Error:
    """The error PostgreSQL answers `sql` with, run in a savepoint (as `role`, if given)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if role:
                cursor.execute(f"SET LOCAL ROLE {role}")
            cursor.execute(sql, params)
    except DatabaseError as exc:
        return exc.__cause__
    pytest.fail(f"{sql} did not fail")


def connection_state() -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, current_setting('statement_timeout'), "
            "current_setting('transaction_read_only'), "
            "(SELECT count(*) FROM reporting_metric_sandbox_scope)"
        )
        return cursor.fetchone()


# --- values ------------------------------------------------------------------------------

NUMBER = "(payload->>'n')::numeric"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT count(*) FROM events", 4),
        ("SELECT count(*) FROM events WHERE type = 'api_call'", 3),
        (f"SELECT sum({NUMBER}) FROM events WHERE type = 'api_call'", Decimal("19.5")),
        (f"SELECT avg({NUMBER}) FROM events WHERE type = 'api_call'", Decimal("6.5")),
        (f"SELECT max({NUMBER}) FROM events", 100),
        (f"SELECT min({NUMBER}) FILTER (WHERE type = 'api_call') FROM events", Decimal("2.5")),
        ("SELECT count(DISTINCT type) FROM events", 2),
        (
            f"WITH calls AS (SELECT {NUMBER} AS n FROM events WHERE type = 'api_call') "
            "SELECT sum(n) FROM calls",
            Decimal("19.5"),
        ),
        (
            f"SELECT count(*) FROM events WHERE {NUMBER} > "
            f"(SELECT avg({NUMBER}) FROM events WHERE type = 'api_call')",
            3,
        ),
        (
            "SELECT max(c) FROM (SELECT type, count(*) AS c FROM events GROUP BY type) AS t",
            3,
        ),
        ("SELECT count(*) FROM events a JOIN events b ON a.type = b.type", 10),
        ("SELECT sum(x) FROM (SELECT 1 AS x UNION ALL SELECT count(*) FROM events) AS u", 5),
        (f"SELECT {NUMBER} FROM events ORDER BY event_time DESC LIMIT 1", 100),
        ("SELECT extract(hour FROM max(event_time)) FROM events", 3),
        ("SELECT count(*) FROM events WHERE jsonb_typeof(payload->'n') = 'number'", 4),
        ('SELECT count(*) FROM events WHERE payload @> \'{"name": "apple"}\'', 1),
        ("SELECT count(*) FROM events WHERE event_time < now()", 4),
        ("SELECT - -count(*) FROM events", 4),  # written back as "- -", not a comment
        ("SELECT coalesce(sum(CASE WHEN type = 'login' THEN 1 ELSE 0 END), 0) FROM events", 1),
        # psycopg never sees these literals: the query travels as a value.
        ("SELECT count(*) FROM events WHERE payload->>'name' LIKE 'a%'", 2),
        ("SELECT count(*) FROM events WHERE payload->>'name' = '%(customer)s'", 1),
        ("SELECT count(*) FROM events WHERE payload->>'name' NOT LIKE '%s%%'", 3),
        # Comments are dropped with everything they hide.
        ("SELECT count(*) /* ; DELETE FROM events */ FROM events -- ; DROP TABLE x", 4),
    ],
)
def test_values_over_the_customers_processed_records(scene, sql, expected):
    acme, _ = scene
    sql_check(sql)
    assert run(acme, sql) == expected


def test_failed_unprocessed_and_in_progress_records_are_not_events(scene):
    acme, _ = scene
    assert run(acme, "SELECT count(*) FROM events WHERE event_time >= '2024-07-01 04:00Z'") == 0
    assert run(acme, f"SELECT max({NUMBER}) FROM events WHERE type = 'api_call'") == 10


def test_another_customer_and_another_operator_are_never_counted(scene):
    acme, globex = scene
    total = f"SELECT sum({NUMBER}) FROM events WHERE type = 'api_call'"
    assert run(acme, total) == Decimal("19.5")
    assert run(acme, total, customer="c2") == 500
    assert run(globex, total) == 9999
    assert run(globex, total, customer="c2") is None
    assert run(acme, total, customer="nobody") is None


def test_the_window_includes_its_start_and_excludes_its_end(scene):
    acme, _ = scene
    count = "SELECT count(*) FROM events"
    assert run(acme, count, start=at(1), end=at(3)) == 2  # h1, h2
    assert run(acme, count, start=at(1)) == 3  # h1, h2, h3
    assert run(acme, count, end=at(1)) == 1  # h0
    assert run(acme, count, start=at(3), end=at(3)) == 0
    # The window narrows events wherever they are read, CTEs and subqueries included.
    nested = (
        "WITH e AS (SELECT * FROM events) "
        "SELECT count(*) FROM e WHERE id IN (SELECT id FROM events)"
    )
    assert run(acme, nested, start=at(1), end=at(3)) == 2


def test_customer_ids_are_bound_not_written_into_the_sql(acme):
    collector = CollectorFactory(operator=acme.operator)
    odd = ["o'brien", "%s", "%(customer)s", "a\\b", "x' OR '1'='1"]
    records_insert(
        operator=acme.operator,
        collector=collector,
        records=[record(1, n=i + 1, customer=customer) for i, customer in enumerate(odd)],
    )
    for i, customer in enumerate(odd):
        assert run(acme, f"SELECT sum({NUMBER}) FROM events", customer=customer) == i + 1


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1.50", Decimal("1.50")),
        ("SELECT 7::bigint", Decimal(7)),
        ("SELECT 0.1::float8", Decimal("0.1")),
        ("SELECT 2.5::real", Decimal("2.5")),
        ("SELECT NULL::numeric", None),
        ("SELECT NULL", None),
        ("SELECT 1 FROM events WHERE false", None),
        (f"SELECT {NUMBER} FROM events WHERE type = 'nothing'", None),
    ],
)
def test_the_value_is_the_one_number_returned(scene, sql, expected):
    acme, _ = scene
    value = run(acme, sql)
    assert value == expected
    if expected is not None:
        assert isinstance(value, Decimal)
        assert str(value) == str(expected)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 'ten'", "must return a number, not text"),
        ("SELECT true", "must return a number, not boolean"),
        ("SELECT payload FROM events WHERE type = 'login'", "must return a number, not jsonb"),
        ("SELECT payload->'n' FROM events WHERE type = 'login'", "not jsonb"),
        ("SELECT max(event_time) FROM events", "not timestamp with time zone"),
        ("SELECT 1, 2", "exactly one column, not 2"),
        ("SELECT 1 AS a, 2 AS a", "exactly one column, not 2"),
        (
            "SELECT * FROM events WHERE type = 'login'",
            f"exactly one column, not {len(EVENTS_COLUMNS)}",
        ),
        ("SELECT id FROM events", "at most one row"),
        ("SELECT 'NaN'::float8", "finite number"),
        ("SELECT 'Infinity'::numeric", "finite number"),
        ("SELECT count(*) / 0 FROM events", "division by zero"),
        (
            "SELECT sum((payload->>'name')::int) FROM events",
            'invalid input syntax for type integer: "',
        ),
    ],
)
def test_a_query_that_is_allowed_but_fails_says_why(scene, sql, message):
    acme, _ = scene
    sql_check(sql)
    with pytest.raises(SqlFailed, match=re.escape(message)):
        run(acme, sql)


def test_the_connection_is_left_as_it_was(scene):
    acme, _ = scene
    before = connection_state()
    assert before[0] != ROLE
    assert run(acme, "SELECT count(*) FROM events") == 4
    assert connection_state() == before
    with pytest.raises(SqlFailed):
        run(acme, "SELECT 1 / 0")
    assert connection_state() == before
    with pytest.raises(SqlFailed):
        raw(acme, "SELECT count(*) FROM collection_record")
    assert connection_state() == before
    # Still inside the test's transaction, and it still takes writes.
    assert connection.in_atomic_block
    assert Record.objects.filter(operator=acme.operator).count() == 8


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_runs_in_its_own_and_rolls_it_back():
    operator = OperatorFactory()
    ids = records_insert(
        operator=operator,
        collector=CollectorFactory(operator=operator),
        records=[record(1, n=2), record(2, n=3)],
    )
    try:
        assert not connection.in_atomic_block
        before = connection_state()
        value = sql_metric_run(
            operator_id=operator.pk, customer_id="c1", start=None, end=None,
            sql=f"SELECT sum({NUMBER}) FROM events",
        )  # fmt: skip
        assert value == 5
        assert connection_state() == before
        assert connection.get_autocommit() and not connection.in_atomic_block
    finally:
        Record.objects.filter(pk__in=ids).delete()  # unmanaged: the flush would keep them


# --- the corpus --------------------------------------------------------------------------

REJECTED = [
    ("", "empty"),
    ("   ;  ", "empty"),
    ("INSERT INTO events (id) VALUES (1)", "only SELECT statements are allowed, not INSERT"),
    ("UPDATE events SET type = 'x'", "only SELECT statements are allowed, not UPDATE"),
    ("DELETE FROM events", "only SELECT statements are allowed, not DELETE"),
    ("DROP TABLE collection_record", "only SELECT statements are allowed, not DROP"),
    ("CREATE TABLE x (a int)", "only SELECT statements are allowed, not CREATE"),
    ("ALTER TABLE events ADD COLUMN x int", "only SELECT statements are allowed, not ALTER"),
    ("TRUNCATE events", "only SELECT statements are allowed, not TRUNCATE"),
    ("GRANT SELECT ON collection_record TO PUBLIC", "not GRANT"),
    ("MERGE INTO events USING x ON true WHEN MATCHED THEN DELETE", "not MERGE"),
    ("COPY events TO '/tmp/x'", "not COPY"),
    ("SET ROLE postgres", "not SET"),
    ("CALL do_something()", "not CALL"),
    ("DO $$ BEGIN END $$", "not DO"),
    ("EXPLAIN SELECT 1", "not EXPLAIN"),
    ("VALUES (1)", "not VALUES"),
    ("SELECT 1; DROP TABLE x", "only one statement"),
    ("SELECT 1 -- \n; DELETE FROM events", "only one statement"),
    ("SELECT 1 /* */; DELETE FROM events /* */", "only one statement"),
    (
        "WITH events AS (SELECT * FROM collection_record) SELECT count(*) FROM events",
        "CTE may not be named events",
    ),
    (
        "WITH x AS (SELECT * FROM events) SELECT count(*) FROM x, collection_record",
        "table collection_record is not allowed",
    ),
    # A CTE is visible where PostgreSQL would resolve it, not anywhere in the query.
    (
        "SELECT (WITH collection_record AS (SELECT 1) SELECT 1), "
        "(SELECT count(*) FROM collection_record)",
        "table collection_record is not allowed",
    ),
    (
        "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM events) SELECT count(*) FROM a",
        "table b is not allowed",
    ),
    ("WITH RECURSIVE r AS (SELECT 1 UNION SELECT 1 FROM r) SELECT 1 FROM r", "WITH RECURSIVE"),
    ("SELECT pg_sleep(10)", "function pg_sleep is not allowed"),
    ("SELECT count(*) FROM events WHERE pg_sleep(1) IS NULL", "function pg_sleep"),
    ('SELECT "pg_sleep"(10)', "quoted function names"),
    ("SELECT set_config('role', 'postgres', false)", "function set_config is not allowed"),
    ("SELECT pg_read_file('/etc/passwd')", "function pg_read_file is not allowed"),
    ("SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)", "functions in FROM"),
    ("SELECT dblink_exec('host=x', 'DROP TABLE x')", "function dblink_exec"),
    ("SELECT lo_import('/etc/passwd')", "function lo_import is not allowed"),
    ("SELECT current_setting('role')", "function current_setting is not allowed"),
    ("SELECT pg_backend_pid()", "function pg_backend_pid is not allowed"),
    ("SELECT txid_current()", "function txid_current is not allowed"),
    ("SELECT nextval('collection_record_id_seq')", "function nextval is not allowed"),
    ("SELECT current_user", "current_user is not allowed"),
    ("SELECT query_to_xml('SELECT 1', true, false, '')", "function query_to_xml"),
    ("SELECT pg_catalog.now()", "schema-qualified names"),
    ("SELECT count(*) FROM pg_catalog.pg_class", "schema-qualified names"),
    ("SELECT count(*) FROM public.events", "schema-qualified names"),
    ("SELECT count(*) FROM pg_class", "table pg_class is not allowed"),
    ("SELECT count(*) FROM information_schema.tables", "schema-qualified names"),
    ("SELECT count(*) FROM reporting_metric_events", "table reporting_metric_events"),
    ('SELECT count(*) FROM "Events"', "table Events is not allowed"),
    ("SELECT * FROM events FOR UPDATE", "FOR UPDATE / FOR SHARE"),
    ("SELECT * FROM events FOR SHARE", "FOR UPDATE / FOR SHARE"),
    ("SELECT * INTO t FROM events", "SELECT … INTO"),
    (
        "SELECT count(*) FROM events a, events b, events c, events d, "
        "generate_series(1, 1000000000)",
        "functions in FROM",
    ),
    ("SELECT sum(g) FROM unnest(ARRAY[1, 2]) AS g", "unnest"),
    ("SELECT count(*) FROM ROWS FROM (jsonb_each('{}'))", "functions in FROM"),
    ("SELECT row_number() OVER () FROM events", "window functions"),
    ("SELECT count(*) FROM events WHERE type ~ 'a'", "regular expressions"),
    ("SELECT 'pg_class'::regclass::oid", "casting to"),
    ("SELECT 1::money", "casting to money"),
    ("SELECT $1", "parameters"),
    ("SELECT %(operator)s", "parameters"),
    ("SELECT E'\\x41'", "plain '…' strings"),
    ("SELECT $q$x$q$", "plain '…' strings"),
    ("SELECT 0x1F", "plain '…' strings"),
    ("SELECT 'a' COLLATE \"C\"", "COLLATE"),
    ("SELECT 1 FROM events TABLESAMPLE SYSTEM (10)", "TABLESAMPLE"),
    ("SELECT 1 FROM ONLY events", "ONLY"),
    ("SELECT x FROM", "cannot be parsed"),
    ("SELECT 'a\x00b'", "NUL character"),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, "nested too deeply"),
    ("x" * (sandbox.MAX_SQL_LENGTH + 1), "longer than"),
]


@pytest.mark.parametrize(("sql", "message"), REJECTED)
def test_sql_outside_the_allowlist_is_rejected_saying_why(sql, message):
    with pytest.raises(SqlRejected, match=re.escape(message)):
        sql_check(sql)


@pytest.mark.parametrize(("sql", "message"), REJECTED[:20])
def test_a_stored_query_is_checked_again_when_it_runs(acme, sql, message):
    with pytest.raises(SqlRejected):
        run(acme, sql)


def test_what_runs_is_regenerated_without_comments():
    query = _sql_compile(
        "select COUNT(*) /* hidden */ from Events e -- trailing\n where e.TYPE = 'a'",
        start=True,
        end=False,
    )
    assert "hidden" not in query and "trailing" not in query and "--" not in query
    assert '"reporting_metric_events"' in query
    assert 'AS "e"' in query and '"e"."type"' in query
    assert '"event_time" >= $3' in query and "$4" not in query


def test_a_runaway_query_is_stopped_and_the_connection_still_works(acme, settings):
    settings.TALLY["METRICS"]["SQL_TIMEOUT_MS"] = 200
    records_insert(
        operator=acme.operator,
        collector=CollectorFactory(operator=acme.operator),
        records=[record(i / 100, n=i) for i in range(300)],
    )
    before = connection_state()
    started = time.monotonic()
    with pytest.raises(SqlFailed, match="stopped after 200 ms"):
        run(acme, "SELECT count(*) FROM events a, events b, events c, events d, events e")
    assert time.monotonic() - started < 5
    assert connection_state() == before
    assert run(acme, "SELECT count(*) FROM events") == 300


# --- the database layer alone ------------------------------------------------------------


def test_the_sandbox_role_reads_nothing_but_the_view(scene):
    acme, _ = scene
    for table in ["collection_record", "reporting_metric_sandbox_scope", "tenants_operator"]:
        with pytest.raises(
            SqlFailed, match=re.escape(f"not allowed: permission denied for table {table}")
        ):
            raw(acme, f"SELECT count(*) FROM {table}")
    with pytest.raises(SqlFailed, match="permission denied for function"):
        raw(acme, "SELECT pg_read_file('/etc/passwd')")


def test_the_view_shows_the_scoped_operators_processed_records_only(scene):
    acme, globex = scene
    assert raw(acme, "SELECT count(*) FROM reporting_metric_events") == "5"  # c1 and c2
    assert raw(globex, "SELECT count(*) FROM reporting_metric_events") == "1"
    mine = "SELECT count(*) FROM reporting_metric_events WHERE operator_id = $1"
    assert raw(acme, mine) == "5"
    others = "SELECT count(*) FROM reporting_metric_events WHERE operator_id <> $1"
    assert raw(acme, others) == "0"


def test_sql_in_the_sandbox_cannot_widen_its_scope(scene):
    acme, globex = scene
    # Writing the scope: refused (a STABLE function runs read-only statements only).
    other = str(globex.operator.pk)
    write = (
        "INSERT INTO reporting_metric_sandbox_scope VALUES (pg_backend_pid() + 1, "
        f"'{other}') RETURNING 'a'::text, 'b'::text, 1"
    )
    with pytest.raises(SqlFailed):
        _sandboxed_execute(operator_id=acme.operator.pk, sql=write)
    update = (
        "WITH w AS (UPDATE reporting_metric_sandbox_scope SET operator_id = "
        f"'{other}' RETURNING 1) SELECT 'a'::text, 'b'::text, 1 FROM w"
    )
    with pytest.raises(SqlFailed):
        _sandboxed_execute(operator_id=acme.operator.pk, sql=update)
    # Taking Tally's own role back: refused inside the security-definer function.
    for setting in ["role", "session_authorization"]:
        with pytest.raises(SqlFailed, match="cannot set parameter"):
            raw(acme, f"SELECT set_config('{setting}', session_user, true)")
    # Settings the query may change do not move the view.
    assert (
        raw(
            acme,
            f"SELECT count(*) FROM (SELECT set_config('tally.operator_id', '{other}', true)) s, "
            "reporting_metric_events",
        )
        == "5"
    )


def test_the_sandbox_role_itself_cannot_write_the_scope(scene):
    """As the role directly (no function, no read-only transaction): the privileges alone."""
    _, globex = scene
    attempts = [
        "INSERT INTO reporting_metric_sandbox_scope VALUES (pg_backend_pid(), %s)",
        "UPDATE reporting_metric_sandbox_scope SET operator_id = %s",
        "DELETE FROM reporting_metric_sandbox_scope WHERE operator_id <> %s",
    ]
    for sql in attempts:
        error = database_error(sql, [globex.operator.pk], role=ROLE)
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), error
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {ROLE}")
        cursor.execute("SELECT count(*) FROM reporting_metric_events")  # no scope row
        assert cursor.fetchone() == (0,)
        transaction.set_rollback(True)


def test_a_failing_cast_never_shows_another_operators_data(scene):
    acme, globex = scene
    leaky = "SELECT count(*) FROM {} WHERE (payload->>'secret')::int > 0"
    # The premise: evaluated on globex's record, the cast fails, quoting its value.
    error = database_error(
        leaky.format("collection_record") + " AND operator_id IN (%s, %s)",
        [acme.operator.pk, globex.operator.pk],
    )
    assert isinstance(error, psycopg.errors.InvalidTextRepresentation)
    assert GLOBEX_SECRET in str(error)
    # The view is a security barrier: the condition only ever sees acme's rows.
    assert raw(acme, leaky.format("reporting_metric_events")) == "3"
    assert run(acme, leaky.format("events")) == 3
    with pytest.raises(SqlFailed) as failed:
        run(globex, leaky.format("events"))
    assert GLOBEX_SECRET in str(failed.value)  # globex sees its own value, of course


def filtered_nodes(plan: dict, needle: str) -> set[str]:
    """The types of the plan nodes whose filter mentions `needle`."""
    found = {plan["Node Type"]} if needle in plan.get("Filter", "") else set()
    for child in plan.get("Plans", []):
        found |= filtered_nodes(child, needle)
    return found


def test_the_users_conditions_stay_above_the_views_own(scene):
    """The barrier in the plan: the cast that can fail is applied to what the view
    returns. Without it, the planner moves the condition down into the scans of the
    records, next to the view's operator condition, and only their costs would decide
    which runs first."""
    acme, _ = scene
    leaky = "SELECT count(*) FROM reporting_metric_events WHERE (payload->>'secret')::int > 0"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO reporting_metric_sandbox_scope VALUES (pg_backend_pid(), %s)",
            [acme.operator.pk],
        )
        cursor.execute(f"EXPLAIN (FORMAT JSON) {leaky}")
        assert filtered_nodes(cursor.fetchone()[0][0]["Plan"], "::integer") == {"Subquery Scan"}
        cursor.execute("ALTER VIEW reporting_metric_events SET (security_barrier = false)")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {leaky}")
        pushed_down = filtered_nodes(cursor.fetchone()[0][0]["Plan"], "::integer")
        assert pushed_down and "Subquery Scan" not in pushed_down
        transaction.set_rollback(True)


def test_without_its_role_the_database_is_not_set_up(acme, monkeypatch):
    monkeypatch.setattr(sandbox, "SANDBOX_ROLE", "tally_metrics_sandbox_missing")
    with pytest.raises(SqlFailed, match=r"not set up on this database: the role \S+ is missing"):
        run(acme, "SELECT count(*) FROM events")


def test_a_function_owned_by_another_role_is_refused(acme):
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER FUNCTION {sandbox.RUN_FUNCTION_SIGNATURE} OWNER TO CURRENT_USER")
        with pytest.raises(SqlFailed, match="must be owned by tally_metrics_sandbox"):
            run(acme, "SELECT count(*) FROM events")
        transaction.set_rollback(True)
    assert run(acme, "SELECT count(*) FROM events") == 0


def test_the_role_setup_can_run_again():
    """Roles belong to the cluster: every database's migration meets an existing one."""
    migration = importlib.import_module("reporting.migrations.0001_metric_sandbox")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(migration.ROLE_SETUP)
        cursor.execute(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = to_regprocedure(%s)",
            [sandbox.RUN_FUNCTION_SIGNATURE],
        )
        assert cursor.fetchone() == (ROLE,)
        transaction.set_rollback(True)


# --- isolation, as a property ------------------------------------------------------------

# (template, predicate on a record dict for the constant): each query's value over the
# records the predicate keeps, computed in Python.
TEMPLATES = {
    "sum_since": (
        "SELECT sum((payload->>'n')::numeric) FROM events WHERE event_time >= '{time}'",
        lambda r, k: r["event_time"] >= k["time"],
        "sum",
    ),
    "count_of_type": (
        "SELECT count(*) FROM events WHERE type = '{type}'",
        lambda r, k: r["type"] == k["type"],
        "count",
    ),
    "max_above": (
        "SELECT max((payload->>'n')::numeric) FROM events "
        "WHERE (payload->>'n')::numeric > {threshold}",
        lambda r, k: r["payload"]["n"] > k["threshold"],
        "max",
    ),
    "cte_sum_of_type": (
        "WITH t AS (SELECT (payload->>'n')::numeric AS n FROM events WHERE type = '{type}') "
        "SELECT sum(n) FROM t",
        lambda r, k: r["type"] == k["type"],
        "sum",
    ),
    "count_before": (
        "SELECT count(*) FROM (SELECT id FROM events WHERE event_time < '{time}') AS e",
        lambda r, k: r["event_time"] < k["time"],
        "count",
    ),
}


def records_strategy(min_size: int = 0):
    return st.lists(
        st.builds(
            record,
            st.integers(0, 48),
            n=st.decimals(min_value=-1000, max_value=1000, places=2),
            customer=st.sampled_from(["c1", "c2"]),
            type=st.sampled_from(["api_call", "login"]),
            status=st.sampled_from([3, 3, 3, 1, 2, 4]),
        ),
        min_size=min_size,
        max_size=12,
    )


constants_strategy = st.fixed_dictionaries(
    {
        "time": st.integers(0, 48).map(at),
        "type": st.sampled_from(["api_call", "login"]),
        "threshold": st.decimals(min_value=-1000, max_value=1000, places=1),
    }
)


def expected_value(records, *, customer, start, end, keep, aggregate):
    values = [
        r["payload"]["n"]
        for r in records
        if r["status"] == 3
        and r["customer_id"] == customer
        and (start is None or r["event_time"] >= start)
        and (end is None or r["event_time"] < end)
        and keep(r)
    ]
    if aggregate == "count":
        return len(values)
    if not values:
        return None
    return sum(values) if aggregate == "sum" else max(values)


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    acme_records=records_strategy(min_size=4),
    globex_records=records_strategy(),
    globex_more=records_strategy(),
    template=st.sampled_from(sorted(TEMPLATES)),
    constants=constants_strategy,
    customer=st.sampled_from(["c1", "c2"]),
    start=st.none() | st.integers(0, 24).map(at),
    end=st.none() | st.integers(24, 49).map(at),
)
def test_a_query_sees_its_operators_records_only(
    acme, globex, acme_records, globex_records, globex_more, template, constants, customer,
    start, end,
):  # fmt: skip
    sql_template, keep, aggregate = TEMPLATES[template]
    sql = sql_template.format(**constants)
    with transaction.atomic():
        acme_collector = CollectorFactory(operator=acme.operator)
        globex_collector = CollectorFactory(operator=globex.operator)
        records_insert(operator=acme.operator, collector=acme_collector, records=acme_records)
        records_insert(operator=globex.operator, collector=globex_collector, records=globex_records)
        value = run(acme, sql, customer=customer, start=start, end=end)
        # How many examples had something to count: see --hypothesis-show-statistics.
        event("none" if value is None else "zero" if value == 0 else "a value")
        assert value == expected_value(
            acme_records,
            customer=customer,
            start=start,
            end=end,
            keep=lambda r: keep(r, constants),
            aggregate=aggregate,
        )
        # Whatever globex's records become, acme's value stays.
        records_insert(operator=globex.operator, collector=globex_collector, records=globex_more)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE collection_record SET payload = '{\"n\": 123456}', status = 3 "
                "WHERE operator_id = %s",
                [globex.operator.pk],
            )
        assert run(acme, sql, customer=customer, start=start, end=end) == value
        transaction.set_rollback(True)
