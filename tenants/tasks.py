"""Celery tasks for tenants: thin wrappers around services."""

from celery import shared_task
from oauth2_provider.models import clear_expired


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def clear_expired_tokens() -> None:
    """Delete access tokens past their expiry, so the token table stays small."""
    clear_expired()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def usage_counters_fold() -> int:
    """Fold the usage counts kept in Redis and the counter deltas into the hourly, daily,
    dekad and monthly counters (exactly once, however often it runs)."""
    from tenants.services import usage_counters_fold as fold

    return fold()
