"""The work queue's index in the order a claim takes records (received_at, id).

The first index led with status, so a claim over `status IN (1, 2)` could not read it in
order: PostgreSQL read and sorted every queued row of the collector for each batch of
500. Partial on the same statuses, so it stays as small.
"""

from django.db import migrations

FORWARD = """
DROP INDEX IF EXISTS collection_record_queue_idx;
CREATE INDEX collection_record_queue_idx ON collection_record (collector_id, received_at, id)
    WHERE status IN (1, 2);
"""
BACKWARD = """
DROP INDEX IF EXISTS collection_record_queue_idx;
CREATE INDEX collection_record_queue_idx ON collection_record (collector_id, status, received_at)
    WHERE status IN (1, 2);
"""


class Migration(migrations.Migration):
    dependencies = [("collection", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
