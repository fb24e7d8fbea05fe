"""Celery tasks for metering: thin wrappers around services, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from metering import revenue
from metering.models import BillingAccount, Meter
from metering.notifications import notification_deliver, notifications_deliver_due
from metering.resets import BATCH_SIZE, meters_reset_due

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reset_due_meters(joining: bool = False) -> int:
    """Close the periods of meters whose period has ended (Beat: every minute).

    When more than one batch is due (a mass hourly or monthly reset), the scheduled run
    asks RESET_WORKERS - 1 more workers to join in; batches are shared through SKIP
    LOCKED, so however many run, each period closes once.
    """
    if not joining:
        helpers = int(settings.TALLY.get("RESET_WORKERS", 2)) - 1
        due = Meter.objects.due_for_reset(timezone.now())
        if helpers > 0 and due[BATCH_SIZE : BATCH_SIZE + 1].exists():
            for _ in range(helpers):
                try:
                    reset_due_meters.apply_async(kwargs={"joining": True}, retry=False)
                except Exception:  # no broker: this run does it alone
                    logger.warning("Could not queue a helper reset.")
                    break
    return meters_reset_due(batch_size=BATCH_SIZE)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_notification(notification_id: str) -> None:
    """Deliver one notification if it is still due (queued when it is committed)."""
    notification_deliver(notification_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_due_notifications() -> int:
    """Deliver due notifications: new ones whose task was lost, and retries (Beat: every
    minute, and after a bulk enqueue)."""
    return notifications_deliver_due()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def revenue_reprice(account_id: str) -> bool:
    """Price an account's usage again after its pricing changed (queued on commit)."""
    return revenue.revenue_reprice(account_id=account_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reprice_pending() -> int:
    """Reprice every account still marked (its task was lost, or failed; Beat: every
    minute); returns how many were repriced."""
    pending = BillingAccount.objects.filter(reprice_from__isnull=False).order_by("reprice_from")
    return sum(
        revenue.revenue_reprice(account_id=pk) for pk in pending.values_list("pk", flat=True)[:100]
    )
