"""Every periodic task, defined in code; `manage.py setup_schedules` writes them to Beat.

Apps add their entries here as they gain periodic work.
"""

from __future__ import annotations

# name -> (task path, interval in seconds)
SCHEDULES: dict[str, tuple[str, int]] = {
    "clear expired access tokens": ("tenants.tasks.clear_expired_tokens", 3600),
}
