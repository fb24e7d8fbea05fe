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


def customer_cycles_on(*, operator_id: uuid.UUID, customer_id: str, day) -> dict[str, Cycle]:
    """The pricing cycle holding `day` of each of the customer's billing accounts that
    has one, by account id (the API's `accountId`). One query."""
    schedules: dict[str, list[Schedule]] = defaultdict(list)
    rows = PlanAssignment.objects.filter(
        operator_id=operator_id, account__customer__external_id=customer_id
    ).values_list("account__account_id", "effective_from", "cycle", "anchor_day")
    for account_id, effective_from, interval, anchor_day in rows:
        schedules[account_id].append(Schedule(effective_from, interval, anchor_day))
    found = {}
    for account_id, account_schedules in schedules.items():
        cycle = cycle_at(account_schedules, day)
        if cycle is not None:
            found[account_id] = cycle
    return found
