from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from common.json import dumps_text
from common.schedules import schedules_collect

# Marks the rows this command owns, so removing a schedule from code removes it here too
# while schedules staff added by hand stay.
MANAGED = "Managed by Tally (<app>/schedules.py)"


class Command(BaseCommand):
    help = "Create or update the Celery Beat schedule from every app's schedules.py."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        schedules = schedules_collect()
        for name, (task, seconds) in schedules.items():
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
            PeriodicTask.objects.filter(description=MANAGED).exclude(name__in=schedules).delete()
        )
        self.stdout.write(dumps_text({"schedules": list(schedules), "removed": removed}))
