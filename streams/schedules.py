"""Periodic work of streams: name -> (task name, interval in seconds)."""

SCHEDULES: dict[str, tuple[str, int]] = {
    "run scheduled batch streams": ("streams.tasks.executions_schedule", 60),
    "recover stalled executions": ("streams.tasks.executions_recover", 60),
    "send pending meter flushes": ("streams.tasks.flushes_run", 60),
    "flush timed-out aggregation sessions": ("streams.tasks.sessions_flush_due", 60),
    "sweep stream keys, logs and counters": ("streams.tasks.streams_sweep", 60),
}
