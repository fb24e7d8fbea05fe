"""Reads for metering that are more than one ORM call."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from metering.cycles import Cycle, Schedule, cycle_at
from metering.models import PlanAssignment


def assignment_first_cycles(assignments: Iterable[PlanAssignment]) -> dict[uuid.UUID, Cycle]:
    """Each assignment's first cycle: from its effective day to its next anchor, or to
    the account's next assignment if that comes first. One query for any number of
    assignments (all assignments of their accounts are needed to cut cycles short)."""
    wanted = list(assignments)
    if not wanted:
        return {}
    schedules: dict[uuid.UUID, list[Schedule]] = defaultdict(list)
    rows = PlanAssignment.objects.filter(
        account_id__in={assignment.account_id for assignment in wanted}
    ).values_list("pk", "account_id", "effective_from", "cycle", "anchor_day")
    for pk, account_id, effective_from, interval, anchor_day in rows:
        schedules[account_id].append(Schedule(effective_from, interval, anchor_day, ref=pk))
    found: dict[uuid.UUID, Cycle] = {}
    for assignment in wanted:
        cycle = cycle_at(schedules[assignment.account_id], assignment.effective_from)
        if cycle is not None and cycle.schedule.ref == assignment.pk:
            found[assignment.pk] = cycle
    return found
