"""The database side of the SQL metrics sandbox (see `reporting.sandbox`).

- `reporting_metric_sandbox_scope`: one row per backend running a metric query, naming
  the operator whose records it may see. Rows are inserted by Tally's own role inside the
  query's transaction and never committed; UNLOGGED since nothing in it outlives that.
- `reporting_metric_events`: the PROCESSED records of the operator of this backend's
  scope row. A security barrier: the user's conditions (say `(payload->>'x')::int > 0`,
  which fails on text) are applied only to rows that passed the view's own, so an error
  message can never show another operator's data.
- `reporting_metric_sandbox_run`: runs a query as the role `tally_metrics_sandbox`
  (SECURITY DEFINER, owned by it). Inside a security-definer function PostgreSQL refuses
  to change `role` or `session_authorization`, so a query cannot `SET ROLE` back to
  Tally's role; STABLE makes PL/pgSQL refuse anything but read-only statements.
- The role `tally_metrics_sandbox` (NOLOGIN), allowed to read the view and nothing else.

Roles belong to the cluster, not to a database: the role is created only when missing
(tolerating another database's migration creating it at the same moment), never dropped
by the reverse migration, and a missing privilege to create it or grant it is a warning,
not a failure: a DBA then sets it up (docs/operations.md, "SQL metrics sandbox role"),
and until then SQL metrics answer that they are not set up.
"""

import sys

from django.db import migrations

FUNCTION = "reporting_metric_sandbox_run(text, uuid, text, timestamptz, timestamptz)"

SCOPE_TABLE = """
CREATE UNLOGGED TABLE reporting_metric_sandbox_scope (
    pid integer PRIMARY KEY,
    operator_id uuid NOT NULL
)
"""

EVENTS_VIEW = """
CREATE VIEW reporting_metric_events WITH (security_barrier) AS
SELECT r.operator_id, r.id, r.type, r.customer_id, r.account_id, r.event_time, r.payload
FROM collection_record r
WHERE r.status = 3
  AND r.operator_id = (
      SELECT s.operator_id FROM reporting_metric_sandbox_scope s WHERE s.pid = pg_backend_pid()
  )
"""

# The query arrives as a value; the operator, customer and bounds reach it as $1..$4.
# RETURNS TABLE: the wrapper in reporting.sandbox returns (type, value, column count).
RUN_FUNCTION = """
CREATE FUNCTION reporting_metric_sandbox_run(
    query text, operator uuid, customer text, since timestamptz, until timestamptz
) RETURNS TABLE (value_type text, value text, column_count integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
AS $fn$
BEGIN
    RETURN QUERY EXECUTE query USING operator, customer, since, until;
END
$fn$
"""

ROLE_SETUP = """
DO $setup$
DECLARE
    schema_name text := current_schema();
BEGIN
    -- 1. The role, unless it exists (another database of the cluster may have made it).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tally_metrics_sandbox') THEN
        BEGIN
            CREATE ROLE tally_metrics_sandbox NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent migration
            WHEN insufficient_privilege THEN
                RAISE WARNING 'Cannot create the role tally_metrics_sandbox: SQL metrics '
                    'stay off until a DBA creates it (docs/operations.md).';
                RETURN;
        END;
    END IF;

    -- 2. Tally's role must be able to SET ROLE to it (a superuser always can).
    IF NOT pg_has_role(current_user, 'tally_metrics_sandbox', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT tally_metrics_sandbox TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
            RAISE WARNING 'Cannot grant tally_metrics_sandbox to %: a DBA must '
                '(docs/operations.md).', current_user;
        END;
    END IF;

    -- 3. What the role may read: the view, nothing else.
    GRANT SELECT ON reporting_metric_events TO tally_metrics_sandbox;
    BEGIN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO tally_metrics_sandbox', schema_name);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- PUBLIC has USAGE on the public schema by default
    END;

    -- 4. The function runs as the role. A non-superuser may only give an object to a
    -- role that can create it, so CREATE on the schema is granted for the moment of the
    -- change and revoked in the same transaction: no one ever sees it.
    BEGIN
        EXECUTE format('GRANT CREATE ON SCHEMA %I TO tally_metrics_sandbox', schema_name);
        ALTER FUNCTION reporting_metric_sandbox_run(text, uuid, text, timestamptz, timestamptz)
            OWNER TO tally_metrics_sandbox;
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM tally_metrics_sandbox', schema_name);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'Cannot make tally_metrics_sandbox own reporting_metric_sandbox_run: '
            'a DBA must (docs/operations.md).';
    END;
END
$setup$
"""

REVERSE_ROLE_SETUP = """
DO $teardown$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tally_metrics_sandbox') THEN
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM tally_metrics_sandbox', current_schema());
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    NULL;
END
$teardown$
"""


def report_setup(apps, schema_editor):
    """Say what is missing: the warnings of the DO block reach no one during `migrate`."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(pg_has_role(r.oid, 'MEMBER'), false), "
            "(SELECT proowner FROM pg_proc WHERE oid = to_regprocedure(%s)) = r.oid "
            "FROM (SELECT to_regrole('tally_metrics_sandbox') AS oid) AS r",
            [FUNCTION],
        )
        usable, owned = cursor.fetchone()
    if not (usable and owned):
        sys.stderr.write(
            "\n  SQL metrics are not set up: the database user may not create or grant the "
            "role tally_metrics_sandbox.\n  A DBA must finish the setup: see docs/operations.md, "
            '"SQL metrics sandbox role".\n'
        )


class Migration(migrations.Migration):
    dependencies = [("collection", "0004_failed_records_index")]

    operations = [
        migrations.RunSQL(
            sql=[
                SCOPE_TABLE,
                EVENTS_VIEW,
                RUN_FUNCTION,
                f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC",
                ROLE_SETUP,
            ],
            reverse_sql=[
                REVERSE_ROLE_SETUP,
                f"DROP FUNCTION IF EXISTS {FUNCTION}",
                "DROP VIEW IF EXISTS reporting_metric_events",
                "DROP TABLE IF EXISTS reporting_metric_sandbox_scope",
            ],
        ),
        migrations.RunPython(report_setup, migrations.RunPython.noop),
    ]
