"""Helpers shared by the apps' admin modules."""

from __future__ import annotations


def adopt_created(unsaved, created) -> None:
    """Make the admin's unsaved form object the row a service created, so the admin's
    log entry and redirect point at the real row."""
    for field in created._meta.concrete_fields:
        setattr(unsaved, field.attname, getattr(created, field.attname))
    unsaved._state.adding = False
    unsaved._state.db = created._state.db
