from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html
from unfold.contrib.filters.admin import AutocompleteSelectFilter
from unfold.decorators import display

from collection import selectors, services
from collection.models import Collector, EventRollup, Ingestion, Record
from common.admin import (
    LargeTableAdminMixin,
    ModelAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    ServiceAdminMixin,
    admin_link,
    changelist_link,
    compact_datetime,
    shortened,
)
from common.json import dumps_pretty

RECORD_STATUS_LABELS = {
    "UNPROCESSED": "info",
    "IN_PROGRESS": "warning",
    "PROCESSED": "success",
    "FAILED": "danger",
}
COLLECTOR_STATUS_LABELS = {"Active": "success", "Creating": "info", "Deleted": "danger"}
# Re-queueing is one statement over these ids; larger selections go in several passes.
REQUEUE_BATCH = 10_000


class RecentIngestionInline(ReadOnlyInline):
    model = Ingestion
    fields = ["received_at", "record_count", "accepted", "duplicates", "rejected", "size_bytes"]
    ordering = ["-received_at"]
    verbose_name_plural = "recent ingestions"
    show_change_link = True
    per_page = 10


@admin.register(Collector)
class CollectorAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = [
        "name",
        "operator_link",
        "status_label",
        "queued",
        "processed",
        "failed",
        "last_ingestion",
    ]
    list_filter = ["status", ("deleted_at", admin.EmptyFieldListFilter), "operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "=id", "operator__name"]
    readonly_fields = [
        "id",
        "operator",
        "status",
        "ingestion_path",
        "record_counts",
        "last_ingestion",
        "created_at",
        "updated_at",
        "deleted_at",
    ]
    fieldsets = [
        (None, {"fields": ["id", "operator", "name", "status", "ingestion_path"]}),
        ("Records", {"fields": ["record_counts", "last_ingestion"]}),
        ("History", {"fields": ["created_at", "updated_at", "deleted_at"]}),
    ]
    inlines = [RecentIngestionInline]

    def has_add_permission(self, request) -> bool:
        # Collectors are created through the API, which enforces the quota and provisions.
        return False

    def get_queryset(self, request):
        return selectors.collectors_with_counts(super().get_queryset(request))

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: Collector) -> str:
        return admin_link(obj.operator)

    @display(description="status", ordering="status", label=COLLECTOR_STATUS_LABELS)
    def status_label(self, obj: Collector) -> str:
        return "Deleted" if obj.is_deleted else obj.get_status_display()

    @admin.display(description="queued", ordering="count_unprocessed")
    def queued(self, obj) -> int:
        return obj.count_unprocessed + obj.count_in_progress

    @admin.display(description="processed", ordering="count_processed")
    def processed(self, obj) -> int:
        return obj.count_processed

    @admin.display(description="failed", ordering="count_failed")
    def failed(self, obj) -> str:
        if not obj.count_failed:
            return "0"
        return changelist_link(
            Record,
            obj.count_failed,
            collector__id__exact=obj.pk,
            status__exact=Record.Status.FAILED.value,
        )

    @admin.display(description="last ingestion", ordering="last_ingestion_at")
    def last_ingestion(self, obj) -> str:
        return compact_datetime(obj.last_ingestion_at)

    @admin.display(description="ingestion URL path")
    def ingestion_path(self, obj: Collector) -> str:
        return format_html("<code>POST /online-collection/v1/collectors/{}/data</code>", obj.pk)

    @admin.display(description="records by status")
    def record_counts(self, obj: Collector) -> str:
        counts = {
            Record.Status.UNPROCESSED: obj.count_unprocessed,
            Record.Status.IN_PROGRESS: obj.count_in_progress,
            Record.Status.PROCESSED: obj.count_processed,
            Record.Status.FAILED: obj.count_failed,
        }
        links = [
            changelist_link(
                Record,
                f"{status.label}: {count}",
                collector__id__exact=obj.pk,
                status__exact=status.value,
            )
            for status, count in counts.items()
        ]
        return format_html(" · ".join(["{}"] * len(links)), *links)

    def save_model(self, request, obj: Collector, form, change) -> None:
        services.collector_rename(collector=obj, name=obj.name)

    def delete_model(self, request, obj: Collector) -> None:
        services.collector_delete(collector=obj)

    def delete_queryset(self, request, queryset) -> None:
        for collector in queryset:
            services.collector_delete(collector=collector)


@admin.register(Ingestion)
class IngestionAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """Accepted ingestion requests (a big table: counted by estimate)."""

    list_display = [
        "received_at",
        "collector_link",
        "operator",
        "record_count",
        "accepted",
        "duplicates",
        "rejected",
        "size",
    ]
    list_display_links = ["received_at"]
    list_filter = [
        ("collector", AutocompleteSelectFilter),
        ("operator", AutocompleteSelectFilter),
    ]
    list_select_related = ["collector", "operator"]
    search_fields = ["=id", "=collector__id"]
    ordering = ["-received_at"]
    fields = [
        "id",
        "operator",
        "collector",
        "received_at",
        "size_bytes",
        "record_count",
        "accepted",
        "duplicates",
        "rejected",
    ]
    readonly_fields = fields

    @admin.display(description="collector", ordering="collector__name")
    def collector_link(self, obj: Ingestion) -> str:
        return admin_link(obj.collector)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: Ingestion) -> str:
        if obj.size_bytes < 1024:
            return f"{obj.size_bytes} B"
        if obj.size_bytes < 1024 * 1024:
            return f"{obj.size_bytes / 1024:.1f} KiB"
        return f"{obj.size_bytes / 1024 / 1024:.1f} MiB"


@admin.register(Record)
class RecordAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """Usage events as received (the biggest table: counted by estimate, searched by
    exact values only, since a substring search would read all of it)."""

    list_display = [
        "record",
        "collector_link",
        "record_type",
        "customer",
        "status_label",
        "event_time",
        "failure",
    ]
    list_display_links = ["record"]
    list_filter = [
        "status",
        ("collector", AutocompleteSelectFilter),
        ("operator", AutocompleteSelectFilter),
    ]
    list_select_related = ["collector"]
    search_fields = ["=record_id", "=customer_id", "=type"]
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
        "status_label",
        "failure_reason",
        "claimed_at",
        "payload_json",
    ]
    readonly_fields = fields

    @admin.display(description="record", ordering="record_id")
    def record(self, obj: Record) -> str:
        return shortened(obj.record_id, 24)

    @admin.display(description="collector", ordering="collector__name")
    def collector_link(self, obj: Record) -> str:
        return admin_link(obj.collector)

    @admin.display(description="type", ordering="type")
    def record_type(self, obj: Record) -> str:
        return shortened(obj.type, 20)

    @admin.display(description="customer", ordering="customer_id")
    def customer(self, obj: Record) -> str:
        return shortened(obj.customer_id, 24)

    @display(description="status", ordering="status", label=RECORD_STATUS_LABELS)
    def status_label(self, obj: Record) -> str:
        return obj.get_status_display()

    @admin.display(description="failure")
    def failure(self, obj: Record) -> str:
        return shortened(obj.failure_reason, 32)

    @admin.display(description="payload")
    def payload_json(self, obj: Record) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.payload))

    @admin.action(description="Re-queue the selected FAILED records")
    def requeue_failed(self, request, queryset) -> None:
        ids = list(
            queryset.filter(status=Record.Status.FAILED)
            .order_by()
            .values_list("pk", flat=True)[:REQUEUE_BATCH]
        )
        count = services.records_requeue_failed(record_ids=ids)
        self.message_user(request, f"{count} failed record(s) queued again.", messages.SUCCESS)


@admin.register(EventRollup)
class EventRollupAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """Record counts per collector, type, status and event hour, as reports read them
    (counts not folded yet are in the rollup deltas, added by every reader)."""

    list_display = ["hour", "collector_link", "type", "status_label", "count", "operator"]
    list_filter = [
        "status",
        ("collector", AutocompleteSelectFilter),
        ("operator", AutocompleteSelectFilter),
    ]
    list_select_related = ["collector", "operator"]
    search_fields = ["=type"]
    # The newest buckets by primary key: ordering by hour would sort the whole table.
    ordering = ["-id"]

    @admin.display(description="collector", ordering="collector__name")
    def collector_link(self, obj: EventRollup) -> str:
        return admin_link(obj.collector)

    @display(description="status", ordering="status", label=RECORD_STATUS_LABELS)
    def status_label(self, obj: EventRollup) -> str:
        return obj.get_status_display()
