import simplejson
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.schedules import SCHEDULES

# Marks the rows this command owns, so removing a schedule from code removes it here too
# while schedules staff added by hand stay.
MANAGED = "Managed by Tally (config/schedules.py)"


class Command(BaseCommand):
    help = "Create or update the Celery Beat schedule from config/schedules.py."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for name, (task, seconds) in SCHEDULES.items():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=seconds, period=IntervalSchedule.SECONDS
            )
            PeriodicTask.objects.update_or_create(
                name=name,
                defaults={
                    "task": task,
                    "interval": interval,
                    "enabled": True,
                    "description": MANAGED,
                },
            )
        removed, _ = (
            PeriodicTask.objects.filter(description=MANAGED).exclude(name__in=SCHEDULES).delete()
        )
        self.stdout.write(simplejson.dumps({"schedules": list(SCHEDULES), "removed": removed}))
