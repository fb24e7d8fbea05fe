"""Every periodic task, defined in code; `manage.py setup_schedules` writes them to Beat.

Apps add their entries here as they gain periodic work.
"""

from __future__ import annotations

# name -> (task path, interval in seconds)
SCHEDULES: dict[str, tuple[str, int]] = {
    "clear expired access tokens": ("tenants.tasks.clear_expired_tokens", 3600),
    "process pending records": ("collection.tasks.records_process_pending", 60),
    "fold event rollups": ("collection.tasks.rollups_fold", 60),
    "fold usage counters": ("tenants.tasks.usage_counters_fold", 60),
    "create record partitions": ("collection.tasks.record_partitions_ensure", 86400),
    "sweep record keys": ("collection.tasks.collection_sweep", 3600),
    "reset due meters": ("metering.tasks.reset_due_meters", 60),
    "deliver due notifications": ("metering.tasks.deliver_due_notifications", 60),
}
