"""Periodic work of collection: name -> (task name, interval in seconds)."""

SCHEDULES: dict[str, tuple[str, int]] = {
    "process pending records": ("collection.tasks.records_process_pending", 60),
    "fold event rollups": ("collection.tasks.rollups_fold", 60),
    "create record partitions": ("collection.tasks.record_partitions_ensure", 86400),
    "sweep record keys": ("collection.tasks.collection_sweep", 3600),
}
