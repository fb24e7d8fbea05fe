from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from collection import selectors, services
from collection.models import Collector, Ingestion, Record
from common.admin import ServiceAdminMixin
from common.json import dumps_pretty


@admin.register(Collector)
class CollectorAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "operator",
        "status",
        "unprocessed",
        "in_progress",
        "processed",
        "failed",
        "last_ingestion",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["status", ("deleted_at", admin.EmptyFieldListFilter), "operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "=id", "operator__name"]
    readonly_fields = ["id", "operator", "status", "created_at", "updated_at", "deleted_at"]
    fields = ["id", "operator", "name", "status", "created_at", "updated_at", "deleted_at"]

    def has_add_permission(self, request) -> bool:
        # Collectors are created through the API, which enforces the quota and provisions.
        return False

    def get_queryset(self, request):
        return selectors.collectors_with_counts(super().get_queryset(request))

    @admin.display(description="unprocessed", ordering="count_unprocessed")
    def unprocessed(self, obj) -> int:
        return obj.count_unprocessed

    @admin.display(description="in progress", ordering="count_in_progress")
    def in_progress(self, obj) -> int:
        return obj.count_in_progress

    @admin.display(description="processed", ordering="count_processed")
    def processed(self, obj) -> int:
        return obj.count_processed

    @admin.display(description="failed", ordering="count_failed")
    def failed(self, obj) -> int:
        return obj.count_failed

    @admin.display(description="last ingestion", ordering="last_ingestion_at")
    def last_ingestion(self, obj):
        return obj.last_ingestion_at

    def save_model(self, request, obj: Collector, form, change) -> None:
        services.collector_rename(collector=obj, name=obj.name)

    def delete_model(self, request, obj: Collector) -> None:
        services.collector_delete(collector=obj)

    def delete_queryset(self, request, queryset) -> None:
        for collector in queryset:
            services.collector_delete(collector=collector)


@admin.register(Ingestion)
class IngestionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "collector",
        "operator",
        "received_at",
        "size_bytes",
        "record_count",
        "accepted",
        "duplicates",
        "rejected",
    ]
    list_filter = ["operator"]
    list_select_related = ["collector", "operator"]
    search_fields = ["=id", "=collector__id", "collector__name"]
    date_hierarchy = "received_at"
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = [
        "record_id",
        "collector",
        "type",
        "customer_id",
        "status_name",
        "event_time",
        "received_at",
        "failure_reason",
    ]
    list_filter = ["status"]
    list_select_related = ["collector"]
    # Exact matches only: the record table is large and a substring search would scan it.
    search_fields = ["=record_id", "=customer_id", "=type"]
    show_full_result_count = False
    actions = ["requeue_failed"]
    fields = [
        "id",
        "record_id",
        "operator",
        "collector",
        "ingestion_id",
        "type",
        "customer_id",
        "account_id",
        "event_time",
        "received_at",
        "status_name",
        "failure_reason",
        "claimed_at",
        "payload_json",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_name(self, obj: Record) -> str:
        return obj.get_status_display()

    @admin.display(description="payload")
    def payload_json(self, obj: Record) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.payload))

    @admin.action(description="Re-queue the selected FAILED records")
    def requeue_failed(self, request, queryset) -> None:
        ids = list(
            queryset.filter(status=Record.Status.FAILED).values_list("pk", flat=True)[:10_000]
        )
        count = services.records_requeue_failed(record_ids=ids)
        self.message_user(request, f"{count} failed record(s) queued again.", messages.SUCCESS)
