"""Periodic work, declared by each app in its own `schedules.py`.

An app lists its Beat entries as `SCHEDULES = {name: (task name, seconds)}`;
`schedules_collect` gathers those of every installed app (the `setup_schedules` command
writes them to Celery Beat), so adding periodic work never touches another app.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from django.apps import apps


def schedules_collect() -> dict[str, tuple[str, int]]:
    """Every installed app's schedules; a name declared twice is an error."""
    collected: dict[str, tuple[str, int]] = {}
    for app_config in apps.get_app_configs():
        module_name = f"{app_config.name}.schedules"
        if find_spec(module_name) is None:
            continue
        for name, entry in import_module(module_name).SCHEDULES.items():
            if name in collected:
                raise ValueError(f"The schedule {name!r} is declared twice ({module_name}).")
            collected[name] = entry
    return collected
