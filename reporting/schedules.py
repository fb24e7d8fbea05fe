"""Periodic work of reporting: name -> (task name, interval in seconds)."""

SCHEDULES: dict[str, tuple[str, int]] = {
    "resume metric backfills": ("reporting.tasks.metric_backfills_resume", 60),
}
