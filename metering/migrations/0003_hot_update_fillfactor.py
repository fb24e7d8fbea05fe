"""Leave room on each page for the rows usage updates rewrite.

Meters and hourly rollups are updated many times each, in place, without touching any
indexed column. With free space on the page PostgreSQL keeps the new row version there
as a heap-only tuple (HOT) and writes no index entries, which roughly halves the cost of
`usage_apply`'s UPDATE and rollup upsert. Django has no model option for storage
parameters, hence SQL.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0002_meterperiod_event_times"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE metering_meter SET (fillfactor = 70);"
            "ALTER TABLE metering_usagerollup SET (fillfactor = 70);",
            reverse_sql="ALTER TABLE metering_meter RESET (fillfactor);"
            "ALTER TABLE metering_usagerollup RESET (fillfactor);",
        ),
    ]
