"""The sandbox for `complex` metric definitions: one user-written SQL SELECT, run safely.

The user writes one SELECT (CTEs allowed) over the documented virtual table

    events(id, type, customer_id, account_id, event_time, payload)

meaning the operator's PROCESSED records of one customer with `start <= event_time < end`
(an absent bound is open). The metric's value is the single value the SELECT returns: one
column, at most one row; no row or NULL is None; a number (integer, numeric or float
types) becomes a Decimal, written as PostgreSQL writes it; anything else (text, boolean,
jsonb, NaN, Infinity) fails.

Two independent layers keep a query inside its operator's data, each meant to hold on its
own (the tests bypass the parser to show the second does).

1. **The parser** (`sql_check`). The text is parsed with sqlglot (PostgreSQL dialect) and
   every node of the tree must be on an allowlist: node types, their arguments, function
   names, cast types, literal kinds, and table names (only `events` and the query's own
   CTEs). Anything else is rejected with a message naming it. What runs is SQL
   *regenerated* from the checked tree, never the input text: comments are dropped (and
   the result is checked to contain none), every identifier is quoted (so a word sqlglot
   took for a column cannot reach PostgreSQL as a keyword such as `current_user`), and
   each `events` becomes a subquery over the view `reporting_metric_events`, keeping the
   user's alias.

2. **The database** (migration `reporting/migrations/0001_metric_sandbox.py`). The query
   runs as the role `tally_metrics_sandbox`, which may read one object: the view
   `reporting_metric_events`. The view (a security barrier) shows the PROCESSED records of
   the operator named by this backend's row in `reporting_metric_sandbox_scope`, a row
   inserted by Tally's own role in the same transaction and never committed. The query is
   executed by `reporting_metric_sandbox_run`, a SECURITY DEFINER plpgsql function owned
   by the sandbox role and declared STABLE: inside it PostgreSQL refuses `SET ROLE`,
   `RESET ROLE` and `set_config('role', …)` ("cannot set parameter within
   security-definer function"), so even SQL that slipped past the parser could not take
   Tally's own privileges back; and a STABLE function may only run read-only statements.

Execution (`_sandboxed_execute`) uses Django's own connection, in one `transaction.atomic()`
block that is always rolled back:

1. check that the role exists, that Tally's user may SET ROLE to it, and that it owns the
   function (else `SqlFailed`, "not set up");
2. insert the scope row `(pg_backend_pid(), operator_id)` as Tally's role;
3. `statement_timeout` (`TALLY["METRICS"]["SQL_TIMEOUT_MS"]`), `transaction_read_only = on`
   and `standard_conforming_strings = on` (the regenerated SQL relies on it), all local;
4. `SET LOCAL ROLE tally_metrics_sandbox`;
5. call the function with the regenerated SQL as a *value* and the operator, customer and
   bounds as typed arguments, which reach the query as `$1`..`$4` through plpgsql's
   `EXECUTE … USING`: no user text is ever interpolated into a statement client-side, so
   a `%` in a literal means nothing to psycopg;
6. roll back: the scope row and every setting above disappear.

Outside a transaction the block is a real transaction. Inside one (a service's, or a test's)
it is a savepoint, and rolling back to a savepoint also undoes the `SET LOCAL`s made after
it, the role and `transaction_read_only` included (PostgreSQL restores settings per
subtransaction), so the caller's transaction continues exactly as before, in its own
role. Using the same connection means the query sees the caller's uncommitted rows, which
is what tests need and harmless for requests.

Allowed constructs: SELECT / UNION / INTERSECT / EXCEPT, WITH (not RECURSIVE), subqueries
(FROM, scalar, IN, EXISTS, LATERAL), joins, VALUES lists, WHERE / GROUP BY / HAVING /
ORDER BY / LIMIT / OFFSET / FETCH, DISTINCT (ON), aggregates count, sum, avg, min, max,
bool_and, bool_or, every (with DISTINCT and FILTER (WHERE …)), CASE, coalesce, nullif,
greatest, least, abs, round, ceil, floor, trunc, sign, mod, power, sqrt, lower, upper,
length, `||`, date_trunc, extract / date_part, AT TIME ZONE, now() / current_timestamp /
current_date, intervals, the jsonb operators `->`, `->>`, `#>`, `#>>`, `?`, `@>` and
jsonb_typeof, jsonb_array_length, arithmetic, comparisons, IS [NOT] NULL / DISTINCT FROM,
IN, BETWEEN, LIKE / ILIKE, AND / OR / NOT, plain string and number literals, and casts to
smallint, integer, bigint, numeric, real, double precision, text, varchar, boolean, date,
timestamp, timestamptz, interval and jsonb. now() is allowed although it makes a value
depend on when it is asked (a "last 24 hours" metric): it reads nothing else.

Not allowed, among others: every other function (pg_sleep, set_config, current_setting,
generate_series, dblink, lo_import, …), window functions, schema-qualified names, any
table but `events` and the query's CTEs, a CTE named `events`, FOR UPDATE / SHARE, INTO,
parameters, regular expressions, COLLATE, other literal kinds (E'…', $$…$$, x'…').

Limits: a query is bounded in time (the statement timeout) and in memory per plan node
(`work_mem`), not in the temporary files a large sort may write during that time
(`temp_file_limit` is the DBA's to set). Only the operator is behind the view's barrier:
the customer and time conditions are ordinary ones, so an error message (a failed cast)
may quote a value from another customer of the same operator, never another operator's.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation

import psycopg
import sqlglot
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import TokenType

EVENTS_COLUMNS = ("id", "type", "customer_id", "account_id", "event_time", "payload")

SANDBOX_ROLE = "tally_metrics_sandbox"
EVENTS_VIEW = "reporting_metric_events"
SCOPE_TABLE = "reporting_metric_sandbox_scope"
RUN_FUNCTION = "reporting_metric_sandbox_run"
RUN_FUNCTION_SIGNATURE = f"{RUN_FUNCTION}(text, uuid, text, timestamptz, timestamptz)"
# Longer SQL is refused before parsing: a metric is a query, not a program.
MAX_SQL_LENGTH = 20_000


class _Dialect(Postgres):
    """PostgreSQL as sqlglot reads it, without lambdas: sqlglot would read the `->` in
    `jsonb_typeof(payload->'a'->'b')` as a lambda `payload -> ('a'->'b')`, a tree that
    says something else than PostgreSQL does. PostgreSQL has no lambdas."""

    class Parser(Postgres.Parser):
        LAMBDAS = {k: v for k, v in Postgres.Parser.LAMBDAS.items() if k != TokenType.ARROW}


_DIALECT = _Dialect
_NOT_SET_UP = "SQL metrics are not set up on this database: {} (see docs/operations.md)"


class SqlRejected(ValueError):
    """The SQL is not allowed; str(e) says why, for a 400."""


class SqlFailed(RuntimeError):
    """The SQL was allowed but failed when run (error, timeout, not one number); str(e)
    says why."""


# --- the allowlist -----------------------------------------------------------------------

# Allowed node types, each with the arguments it may carry. The type must match exactly
# (a subclass is another construct), and an argument not listed here (sqlglot models many
# dialects: Select has `into`, `locks`, `sample`, …) rejects the query.
_QUERY_MODIFIERS = {"order", "limit", "offset"}
_BINARY = {"this", "expression"}
_NODES: dict[type[exp.Expression], set[str]] = {
    # Query structure.
    exp.Select: {"with_", "expressions", "distinct", "from_", "joins", "where", "group"}
    | {"having"}
    | _QUERY_MODIFIERS,
    exp.Union: {"with_", "this", "expression", "distinct"} | _QUERY_MODIFIERS,
    exp.Except: {"with_", "this", "expression", "distinct"} | _QUERY_MODIFIERS,
    exp.Intersect: {"with_", "this", "expression", "distinct"} | _QUERY_MODIFIERS,
    exp.Subquery: {"this", "alias"} | _QUERY_MODIFIERS,
    exp.With: {"expressions"},
    exp.CTE: {"this", "alias", "materialized"},
    exp.TableAlias: {"this", "columns"},
    exp.From: {"this"},
    exp.Join: {"this", "on", "side", "kind", "using", "method"},
    exp.Lateral: {"this", "alias"},
    exp.Table: {"this", "alias"},
    exp.Values: {"expressions", "alias"},
    exp.Tuple: {"expressions"},
    exp.Where: {"this"},
    exp.Group: {"expressions"},
    exp.Having: {"this"},
    exp.Order: {"expressions"},
    exp.Ordered: {"this", "desc", "nulls_first"},
    exp.Limit: {"expression"},
    exp.Offset: {"expression"},
    exp.Fetch: {"direction", "count", "limit_options"},
    exp.LimitOptions: {"percent", "rows", "with_ties"},
    exp.Distinct: {"expressions", "on"},
    exp.Alias: {"this", "alias"},
    exp.Column: {"this", "table"},
    exp.Identifier: {"this", "quoted"},
    exp.Star: set(),
    exp.Paren: {"this"},
    exp.Exists: {"this"},
    # Values.
    exp.Literal: {"this", "is_string"},
    exp.Null: set(),
    exp.Boolean: {"this"},
    exp.Interval: {"this", "unit"},
    exp.Var: {"this"},
    exp.Cast: {"this", "to"},
    exp.DataType: {"this", "expressions", "nested"},
    exp.DataTypeParam: {"this"},
    exp.CurrentTimestamp: set(),
    exp.CurrentDate: set(),
    # Operators.
    exp.Add: _BINARY,
    exp.Sub: _BINARY,
    exp.Mul: _BINARY,
    exp.Div: _BINARY | {"typed", "safe"},
    exp.Mod: _BINARY,
    exp.Pow: _BINARY,
    exp.Neg: {"this"},
    exp.DPipe: _BINARY | {"safe"},
    exp.EQ: _BINARY,
    exp.NEQ: _BINARY,
    exp.GT: _BINARY,
    exp.GTE: _BINARY,
    exp.LT: _BINARY,
    exp.LTE: _BINARY,
    exp.NullSafeEQ: _BINARY,
    exp.NullSafeNEQ: _BINARY,
    exp.Is: _BINARY | {"negate"},
    exp.And: _BINARY,
    exp.Or: _BINARY,
    exp.Not: {"this"},
    exp.In: {"this", "expressions", "query"},
    exp.Between: {"this", "low", "high"},
    exp.Like: _BINARY | {"negate"},
    exp.ILike: _BINARY | {"negate"},
    exp.Escape: _BINARY,
    exp.Case: {"this", "ifs", "default"},
    exp.If: {"this", "true"},
    # jsonb: -> ->> (with their paths), #> #>>, ? and @>.
    exp.JSONExtract: _BINARY | {"only_json_types"},
    exp.JSONExtractScalar: _BINARY | {"only_json_types"},
    exp.JSONPath: {"expressions"},
    exp.JSONPathRoot: set(),
    exp.JSONPathKey: {"this"},
    exp.JSONPathSubscript: {"this"},
    exp.JSONBExtract: _BINARY,
    exp.JSONBExtractScalar: _BINARY,
    exp.JSONBContainsTopKey: _BINARY,
    exp.ArrayContainsAll: _BINARY,
    # Functions sqlglot knows by class.
    exp.Count: {"this", "big_int"},
    exp.Sum: {"this"},
    exp.Avg: {"this"},
    exp.Min: {"this"},
    exp.Max: {"this"},
    exp.LogicalAnd: {"this"},
    exp.LogicalOr: {"this"},
    exp.Filter: _BINARY,
    exp.Coalesce: {"this", "expressions"},
    exp.Nullif: _BINARY,
    exp.Greatest: {"this", "expressions", "ignore_nulls"},
    exp.Least: {"this", "expressions", "ignore_nulls"},
    exp.Abs: {"this"},
    exp.Round: {"this", "decimals"},
    exp.Ceil: {"this"},
    exp.Floor: {"this"},
    exp.Trunc: {"this", "decimals"},
    exp.Sign: {"this"},
    exp.Sqrt: {"this"},
    exp.Lower: {"this"},
    exp.Upper: {"this"},
    exp.Length: {"this"},
    exp.Extract: _BINARY,
    exp.TimestampTrunc: {"this", "unit", "zone"},
    exp.AtTimeZone: {"this", "zone"},
    # Functions sqlglot does not model: checked by name below.
    exp.Anonymous: {"this", "expressions"},
}
_ANONYMOUS_FUNCTIONS = {"every", "jsonb_typeof", "jsonb_array_length"}
_CAST_TYPES = {
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.DECIMAL,
    exp.DataType.Type.FLOAT,
    exp.DataType.Type.DOUBLE,
    exp.DataType.Type.TEXT,
    exp.DataType.Type.VARCHAR,
    exp.DataType.Type.BOOLEAN,
    exp.DataType.Type.DATE,
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.TIMESTAMPTZ,
    exp.DataType.Type.INTERVAL,
    exp.DataType.Type.JSONB,
}
# Bare words sqlglot keeps as Var: a unit in these places, written out as a keyword or a
# string, never as a name PostgreSQL would look up.
_VAR_PLACES = {(exp.Interval, "unit"), (exp.Extract, "this"), (exp.TimestampTrunc, "unit")}
_WORD = re.compile(r"[A-Za-z]+\Z")
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")

# Why a construct is refused, where its name alone would not say it well.
_NODE_MESSAGES: dict[type[exp.Expression], str] = {
    exp.Window: "window functions (OVER …) are not allowed",
    exp.Parameter: "query parameters are not allowed",
    exp.Placeholder: "query parameters are not allowed",
    exp.Dot: "schema-qualified names are not allowed",
    exp.Collate: "COLLATE is not allowed",
    exp.RegexpLike: "regular expressions are not allowed",
    exp.RegexpILike: "regular expressions are not allowed",
    exp.SimilarTo: "regular expressions are not allowed",
    exp.HexString: "only plain '…' strings and numbers are allowed as literals",
    exp.BitString: "only plain '…' strings and numbers are allowed as literals",
    exp.ByteString: "only plain '…' strings and numbers are allowed as literals",
    exp.RawString: "only plain '…' strings and numbers are allowed as literals",
    exp.UnicodeString: "only plain '…' strings and numbers are allowed as literals",
    exp.Unnest: "function unnest is not allowed",
}
_ARG_MESSAGES = {
    "into": "SELECT … INTO is not allowed",
    "locks": "FOR UPDATE / FOR SHARE is not allowed",
    "windows": "window functions (OVER …) are not allowed",
    "recursive": "WITH RECURSIVE is not allowed",
    "sample": "TABLESAMPLE is not allowed",
    "db": "schema-qualified names are not allowed",
    "catalog": "schema-qualified names are not allowed",
    "only": "ONLY is not allowed",
    "rows_from": "functions in FROM are not allowed",
}


def _reject_node(node: exp.Expression) -> SqlRejected:
    if type(node) in _NODE_MESSAGES:
        return SqlRejected(_NODE_MESSAGES[type(node)])
    written = node.sql(dialect=_DIALECT)
    if isinstance(node.parent, exp.Cast) and node.arg_key == "to":
        return SqlRejected(f"casting to {written.lower()} is not allowed")
    # A function is written as its PostgreSQL name and "(": name it. Operators sqlglot
    # models as functions (`?|`, ARRAY[…]) are shown as written.
    name = written.split("(", 1)[0].strip()
    if isinstance(node, exp.Func) and "(" in written and _FUNCTION_NAME.match(name):
        return SqlRejected(f"function {name.lower()} is not allowed")
    if isinstance(node, exp.Func) and _FUNCTION_NAME.match(written):
        return SqlRejected(f"{written.lower()} is not allowed")  # CURRENT_USER and the like
    if len(written) > 60:
        written = written[:57] + "..."
    return SqlRejected(f"{written} is not allowed here")


def _is_set(value: object) -> bool:
    return value is not None and value is not False and value != []


def _node_check(node: exp.Expression) -> None:
    """Raise SqlRejected unless this one node (not its children) is allowed."""
    allowed = _NODES.get(type(node))
    if allowed is None:
        raise _reject_node(node)
    if isinstance(node, exp.DataType) and (
        node.this not in _CAST_TYPES
        or any(_is_set(node.args.get(k)) for k in node.args.keys() - {"this", "expressions"})
    ):
        raise SqlRejected(f"casting to {node.sql(dialect=_DIALECT).lower()} is not allowed")
    for key, value in node.args.items():
        if key not in allowed and _is_set(value):
            message = _ARG_MESSAGES.get(key)
            if message is None:
                name = key.rstrip("_").replace("_", " ").upper()
                message = f"{name} in {node.key.upper()} is not allowed"
            raise SqlRejected(message)
    if isinstance(node, exp.Literal) and not node.is_string and not _NUMBER.match(node.name):
        raise SqlRejected(f"number {node.name} is not allowed")
    if isinstance(node, exp.Var):
        place = (type(node.parent), node.arg_key)
        if place not in _VAR_PLACES or not _WORD.match(node.name):
            raise SqlRejected(f"{node.name} is not allowed here")
    if isinstance(node, exp.Anonymous):
        if not isinstance(node.this, str):
            raise SqlRejected("quoted function names are not allowed")
        if node.name.lower() not in _ANONYMOUS_FUNCTIONS:
            raise SqlRejected(f"function {node.name.lower()} is not allowed")
    if isinstance(node, exp.DataTypeParam) and not (
        isinstance(node.this, exp.Literal) and not node.this.is_string
    ):
        raise SqlRejected("type parameters must be numbers")
    if isinstance(node, exp.CTE) and node.alias == "events":
        raise SqlRejected("a CTE may not be named events: events is the records table")
    if isinstance(node, exp.Table):
        _table_check(node)


def _table_check(table: exp.Table) -> None:
    if not isinstance(table.this, exp.Identifier):
        raise SqlRejected("functions in FROM are not allowed")
    name = table.name
    if name != "events" and name not in _visible_ctes(table):
        raise SqlRejected(
            f"table {name} is not allowed: a query reads events and its own CTEs only"
        )


def _visible_ctes(node: exp.Expression) -> set[str]:
    """The CTE names PostgreSQL resolves a table name against at `node`: those of every
    enclosing WITH, except that inside a CTE only the CTEs before it are visible (WITH
    RECURSIVE, where a CTE sees itself and later ones, is refused)."""
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            # Identity, not ==: sqlglot compares expressions by their content.
            position = next(i for i, cte in enumerate(parent.expressions) if cte is child)
            names.update(cte.alias for cte in parent.expressions[:position])
        else:
            with_ = parent.args.get("with_")
            if isinstance(with_, exp.With) and child is not with_:
                names.update(cte.alias for cte in with_.expressions)
        child, parent = parent, parent.parent
    return names


def _sql_parse(sql: str) -> exp.Query:
    """The checked tree of `sql`, its unquoted names folded to lower case as PostgreSQL
    folds them; raises SqlRejected."""
    if not sql or not sql.strip():
        raise SqlRejected("the SQL is empty")
    if len(sql) > MAX_SQL_LENGTH:
        raise SqlRejected(f"the SQL is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise SqlRejected("the SQL contains a NUL character")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=_DIALECT) if s is not None]
    except (ParseError, TokenError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise SqlRejected(f"the SQL cannot be parsed: {first_line}") from None
    except RecursionError:
        raise SqlRejected("the SQL is nested too deeply") from None
    if not statements:
        raise SqlRejected("the SQL is empty")
    if len(statements) > 1:
        raise SqlRejected("only one statement is allowed")
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        # Statements sqlglot has no model for (SET, CALL, DO, EXPLAIN…) are Commands.
        kind = tree.name if isinstance(tree, exp.Command) else tree.key
        kind = {"truncatetable": "TRUNCATE"}.get(kind.lower(), kind.upper())
        raise SqlRejected(f"only SELECT statements are allowed, not {kind}")
    tree = normalize_identifiers(tree, dialect=_DIALECT)
    try:
        for node in tree.walk():
            _node_check(node)
    except RecursionError:
        raise SqlRejected("the SQL is nested too deeply") from None
    return tree


def sql_check(sql: str) -> None:
    """Raise SqlRejected (saying why) unless `sql` is an allowed metric query."""
    _sql_parse(sql)


def _events_source(*, start: bool, end: bool) -> exp.Select:
    """What `events` stands for: the view, narrowed to the operator ($1), the customer
    ($2) and the bounds that are set ($3, $4). The values arrive as typed arguments."""
    conditions = ["operator_id = $1", "customer_id = $2"]
    if start:
        conditions.append("event_time >= $3")
    if end:
        conditions.append("event_time < $4")
    columns, where = ", ".join(EVENTS_COLUMNS), " AND ".join(conditions)
    return sqlglot.parse_one(
        f"SELECT {columns} FROM {EVENTS_VIEW} WHERE {where}",  # noqa: S608 - constants only
        dialect=_DIALECT,
    )


def _sql_compile(sql: str, *, start: bool, end: bool) -> str:
    """The SQL that runs for `sql`: regenerated from the checked tree, without comments,
    every identifier quoted, every `events` a subquery over the view under the user's
    alias. `start`/`end` say which bounds are set."""
    tree = _sql_parse(sql)
    source = _events_source(start=start, end=end)
    for table in list(tree.find_all(exp.Table)):
        if table.name == "events":
            alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier("events"))
            table.replace(exp.Subquery(this=source.copy(), alias=alias))
    try:
        query = tree.sql(
            dialect=_DIALECT,
            identify=True,
            comments=False,
            unsupported_level=ErrorLevel.RAISE,
        )
        # Comments are how text hides from a parser: the regenerated SQL must have none,
        # whatever the writer did (a "-" next to a "-" would start one).
        tokens = _DIALECT().tokenize(query)
    except SqlglotError as exc:  # a construct the PostgreSQL writer cannot express
        raise SqlRejected(f"the SQL cannot be run: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise SqlRejected("the SQL is nested too deeply") from None
    if any(token.comments for token in tokens):
        raise SqlRejected("the SQL cannot be run: it would contain a comment")
    return query


# --- running ------------------------------------------------------------------------------

_NUMERIC_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}


def _wrapped(query: str) -> str:
    """`query` as a subquery whose rows come back as (type, value as text, column count)
    of its first column: the shape `reporting_metric_sandbox_run` returns.

    The type tells a number from text or jsonb; numbers come back as PostgreSQL writes
    them (exact for numeric, shortest round-trip digits for floats). The first column is
    renamed by a column alias list, to a random name so that a user's column cannot clash
    with it."""
    column = f"tally_value_{secrets.token_hex(4)}"
    return (
        f'SELECT pg_typeof(q."{column}")::text, q."{column}"::text, '  # noqa: S608 - by design
        "(SELECT count(*) FROM json_object_keys(row_to_json(q)))::integer "
        f'FROM ({query}) AS q("{column}") LIMIT 2'
    )


def _sandboxed_execute(
    *,
    operator_id: uuid.UUID,
    sql: str,
    customer_id: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[tuple[str, str | None, int]]:
    """Run `sql` as the sandbox role, scoped to the operator, and return its first two
    rows, always rolling back. This is the database layer alone: `sql` is not checked
    (`sql_metric_run` checks it first), it may use $1..$4 (operator, customer, start,
    end), and it must return (text, text, integer) rows (see `_wrapped`).

    Raises SqlFailed for every error PostgreSQL reports, and when the database is not set
    up for SQL metrics.
    """
    timeout_ms = int(settings.TALLY["METRICS"]["SQL_TIMEOUT_MS"])
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # 1. The database must have been set up by the migration (or a DBA): a
            # function owned by anyone else would run the query with its owner's rights.
            cursor.execute(
                "SELECT r.oid IS NOT NULL, coalesce(pg_has_role(r.oid, 'MEMBER'), false), "
                "(SELECT proowner FROM pg_proc WHERE oid = to_regprocedure(%s)) = r.oid "
                "FROM (SELECT to_regrole(%s) AS oid) AS r",
                [RUN_FUNCTION_SIGNATURE, SANDBOX_ROLE],
            )
            role_exists, role_usable, function_owned = cursor.fetchone()
            if not role_exists:
                raise SqlFailed(_NOT_SET_UP.format(f"the role {SANDBOX_ROLE} is missing"))
            if not role_usable:
                raise SqlFailed(
                    _NOT_SET_UP.format(f"the database user is not a member of {SANDBOX_ROLE}")
                )
            if not function_owned:
                raise SqlFailed(
                    _NOT_SET_UP.format(f"{RUN_FUNCTION} must be owned by {SANDBOX_ROLE}")
                )
            # 2. The scope the view reads, visible to this transaction only.
            cursor.execute(
                f"INSERT INTO {SCOPE_TABLE} (pid, operator_id) VALUES (pg_backend_pid(), %s)",  # noqa: S608
                [operator_id],
            )
            # 3. Local settings (set_config(…, true) is SET LOCAL): gone with the
            # rollback, to a savepoint or not.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true), "
                "set_config('transaction_read_only', 'on', true), "
                "set_config('standard_conforming_strings', 'on', true)",
                [str(timeout_ms)],
            )
            # 4. The function would switch to the role anyway; this makes the call itself
            # run without Tally's rights too.
            cursor.execute(f"SET LOCAL ROLE {SANDBOX_ROLE}")
            # 5. The query is a value here, never part of this statement's text.
            cursor.execute(
                f"SELECT * FROM {RUN_FUNCTION}(%s, %s, %s, %s, %s)",  # noqa: S608
                [sql, operator_id, customer_id, start, end],
            )
            rows = cursor.fetchmany(2)
            # 6. Nothing of the above may outlive the query.
            transaction.set_rollback(True)
    except DatabaseError as exc:
        raise _failure(exc, timeout_ms) from None
    return rows


def _failure(exc: DatabaseError, timeout_ms: int) -> Exception:
    """The SqlFailed for an error PostgreSQL reported; other errors (a lost connection)
    are not the SQL's fault and stay as they are."""
    cause = exc.__cause__
    if not isinstance(cause, psycopg.Error) or cause.sqlstate is None:
        return exc
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return SqlFailed(f"the SQL was stopped after {timeout_ms} ms")
    # The primary message only: the CONTEXT lines would show the wrapper, not the user's SQL.
    message = cause.diag.message_primary or str(cause).splitlines()[0]
    if isinstance(cause, psycopg.errors.InsufficientPrivilege):
        return SqlFailed(f"not allowed: {message}")
    return SqlFailed(message)


def _metric_value(rows: list[tuple[str, str | None, int]]) -> Decimal | None:
    """The value of a metric whose query returned `rows` (see `_wrapped`)."""
    if not rows:
        return None
    value_type, value, column_count = rows[0]
    if column_count != 1:
        raise SqlFailed(f"the SQL must return exactly one column, not {column_count}")
    if len(rows) > 1:
        raise SqlFailed("the SQL must return at most one row, it returned more")
    if value is None:
        return None
    if value_type not in _NUMERIC_TYPES:
        raise SqlFailed(
            f"the SQL must return a number, not {value_type} "
            "(cast it, for example (payload->>'n')::numeric)"
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise SqlFailed(f"the SQL returned {value}, which is not a number") from None
    if not number.is_finite():
        raise SqlFailed(f"the SQL must return a finite number, not {value}")
    return number


def sql_metric_run(
    *,
    operator_id: uuid.UUID,
    customer_id: str,
    start: datetime | None,
    end: datetime | None,
    sql: str,
) -> Decimal | None:
    """The value of the metric query `sql` for one customer of one operator over
    `start <= event_time < end` (None: open on that side): None when it returns no row
    or NULL.

    Raises SqlRejected when the SQL is not allowed (it is checked again on every run),
    SqlFailed when it fails, times out, or does not return one number.
    """
    query = _sql_compile(sql, start=start is not None, end=end is not None)
    rows = _sandboxed_execute(
        operator_id=operator_id,
        sql=_wrapped(query),
        customer_id=customer_id,
        start=start,
        end=end,
    )
    return _metric_value(rows)
