"""Periodic work of metering: name -> (task name, interval in seconds)."""

SCHEDULES: dict[str, tuple[str, int]] = {
    "reset due meters": ("metering.tasks.reset_due_meters", 60),
    "deliver due notifications": ("metering.tasks.deliver_due_notifications", 60),
    "reprice changed accounts": ("metering.tasks.reprice_pending", 60),
}
