from django.apps import AppConfig


class ReportingConfig(AppConfig):
    name = "reporting"
    verbose_name = "Reporting"

    def ready(self) -> None:
        # Indexed metrics count records in the transaction that marks them PROCESSED.
        from collection.processing import register_processed_hook
        from reporting.services import metrics_index_batch

        register_processed_hook(metrics_index_batch)
