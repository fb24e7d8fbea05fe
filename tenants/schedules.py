"""Periodic work of tenants: name -> (task name, interval in seconds)."""

SCHEDULES: dict[str, tuple[str, int]] = {
    "clear expired access tokens": ("tenants.tasks.clear_expired_tokens", 3600),
    "fold usage counters": ("tenants.tasks.usage_counters_fold", 60),
}
