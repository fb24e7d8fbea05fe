from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "Streams"

    def ready(self) -> None:
        # The runtime plugs into collection (records of a collector) and metering
        # (closed periods), which know nothing of streams.
        from collection.processing import register_resolver
        from metering.resets import period_listener_add
        from streams.runtime.runner import periods_queue_flushes, realtime_processor_for

        register_resolver(realtime_processor_for)
        period_listener_add(periods_queue_flushes)
