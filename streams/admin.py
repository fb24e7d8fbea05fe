from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from common.json import dumps, dumps_pretty
from streams.models import Solution, Stream, StreamKey, StreamVersion
from streams.selectors import stream_config_with_keys, stream_version


@admin.register(Solution)
class SolutionAdmin(admin.ModelAdmin):
    list_display = ["name", "operator", "is_default", "created_at"]
    list_filter = ["is_default", "operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "operator__name"]
    readonly_fields = ["is_default", "created_at"]


class VersionInline(admin.TabularInline):
    model = StreamVersion
    extra = 0
    can_delete = False
    fields = ["tag", "is_latest", "schema_version", "created_at", "node_count"]
    readonly_fields = fields
    ordering = ["-is_latest", "-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="nodes")
    def node_count(self, obj: StreamVersion) -> int:
        return len(obj.config.get("nodes", []))


class KeyInline(admin.TabularInline):
    model = StreamKey
    extra = 0
    can_delete = False
    fields = ["node_id", "kind", "value"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    """Streams are written by importing them (the API); here they are read and exported."""

    list_display = [
        "name",
        "solution",
        "operator",
        "processing_type",
        "enabled",
        "cas",
        "updated_at",
    ]
    list_filter = ["processing_type", "enabled", "operator"]
    list_select_related = ["solution", "operator"]
    search_fields = ["name", "description", "id"]
    fields = [
        "operator",
        "solution",
        "name",
        "description",
        "processing_type",
        "enabled",
        "cas",
        "created_by",
        "updated_by",
        "created_at",
        "updated_at",
        "export_link",
        "latest_configuration",
    ]
    readonly_fields = fields
    inlines = [VersionInline, KeyInline]
    actions = ["download_exports"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    @admin.display(description="export")
    def export_link(self, obj: Stream) -> str:
        url = reverse("admin:streams_stream_changelist") + f"?id__exact={obj.pk}"
        return format_html('<a href="{}">select it on the list, then "Download exports"</a>', url)

    @admin.display(description="latest configuration")
    def latest_configuration(self, obj: Stream) -> str:
        config = stream_config_with_keys(obj, stream_version(obj))
        return format_html("<pre>{}</pre>", dumps_pretty(config))

    @admin.action(description="Download exports (JSON)")
    def download_exports(self, request, queryset) -> HttpResponse:
        streams = list(queryset.select_related("solution"))
        exported = [stream_config_with_keys(s, stream_version(s)) for s in streams]
        body = dumps(exported[0] if len(exported) == 1 else exported)
        name = streams[0].name if len(streams) == 1 else "streams"
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
