"""An index on failed records (collector, received_at, id), partial on FAILED: the
collector page lists them newest first, and the admin re-queues them, without reading
the collector's other records. Failures are few, so it stays small."""

from django.db import migrations

FORWARD = """
CREATE INDEX collection_record_failed_idx ON collection_record (collector_id, received_at, id)
    WHERE status = 4;
"""
BACKWARD = "DROP INDEX IF EXISTS collection_record_failed_idx;"


class Migration(migrations.Migration):
    dependencies = [("collection", "0003_customer_event_rollups")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
