"""Fill the daily, dekad and monthly usage rollups from the hourly counters already
folded (deltas still pending reach all four when they are folded), and name
`transforms/http` connections `<stream id>/<node id>` as the accounting now does (it was
`<stream id>:<node id>`).

Run it with the fold stopped (Beat, as during any deploy that migrates): a fold of the
previous release running meanwhile would add to the hourly counters only.
"""

from django.db import migrations

HTTP_CONNECTIONS = """
UPDATE {table} SET connection = regexp_replace(connection, '{old}', '{new}')
WHERE kind = 'gateway_request' AND key = 'http'
"""

FILL = """
INSERT INTO tenants_usagecounterdaily (operator_id, day, kind, key, connection, count)
SELECT operator_id, (hour AT TIME ZONE 'UTC')::date, kind, key, connection, sum(count)
FROM tenants_usagecounter GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5;
INSERT INTO tenants_usagecounterdekad (operator_id, dekad, kind, key, connection, count)
SELECT operator_id,
    date_trunc('month', day)::date + least((extract(day FROM day)::integer - 1) / 10, 2) * 10,
    kind, key, connection, sum(count)
FROM tenants_usagecounterdaily GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5;
INSERT INTO tenants_usagecountermonthly (operator_id, month, kind, key, connection, count)
SELECT operator_id, date_trunc('month', day)::date, kind, key, connection, sum(count)
FROM tenants_usagecounterdaily GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5;
"""

EMPTY = (
    "DELETE FROM tenants_usagecountermonthly; DELETE FROM tenants_usagecounterdekad; "
    "DELETE FROM tenants_usagecounterdaily;"
)


def _renames(old: str, new: str) -> str:
    return ";".join(
        HTTP_CONNECTIONS.format(table=table, old=old, new=new)
        for table in ("tenants_usagecounter", "tenants_usagecounterdelta")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0005_usage_rollups"),
    ]

    operations = [
        migrations.RunSQL(_renames(":", "/"), _renames("/", ":")),
        migrations.RunSQL(FILL, EMPTY),
    ]
