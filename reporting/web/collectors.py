"""The collectors pages of `/dashboard/`: the operator's collectors with their records
by status, and a page per collector saying where and how to send records, which of them
failed (at which node, and why) and re-queueing them.

Counts come from the event rollups plus the deltas not folded yet (collection's
selectors, as the API's `…/stats` answers them), never from a scan of records. Only the
failed records themselves are read from the record table, a page at a time, and only
when the rollups say there are some.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from collection.models import Collector, Record
from collection.selectors import collector_stats, collectors_with_counts
from collection.services import records_requeue_failed
from common.json import dumps_pretty
from reporting.web.access import operator_object_or_404, operator_page
from reporting.web.shell import DASHBOARD, shell_render
from streams.models import StreamVersion
from streams.runtime.engine import Failure

FAILED_PAGE_SIZE = 25
# "Re-queue all failed" takes this many at a time, as the admin's action does: one
# statement with a bounded list of ids.
REQUEUE_AT_ONCE = 10_000
# Record ids are PostgreSQL bigints; a larger number is not an id (and would be an error).
_MAX_RECORD_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
# How much of a failed record's payload the page shows.
PAYLOAD_SHOWN_CHARACTERS = 2_000

# The status cards of a collector's page: (status, title, what it counts).
STATUS_CARDS = (
    ("PROCESSED", "Processed", "records the streams applied"),
    ("UNPROCESSED", "Waiting", "stored, not yet taken by a worker"),
    ("IN_PROGRESS", "In progress", "taken by a worker right now"),
    ("FAILED", "Failed", "failed at a stream node, not re-queued"),
)


@dataclass(frozen=True)
class FailedRecord:
    record: Record
    node_id: str
    node_name: str
    reason: str
    stream_id: Any  # the stream reading this collector that has that node, if one does
    stream_name: str
    payload: str


def _collector_readers(collector: Collector) -> list[StreamVersion]:
    """The latest versions of the operator's streams that read this collector, with
    their streams, in one query."""
    reader = [{"type": "readers/online_collection", "params": {"collectorId": str(collector.pk)}}]
    return list(
        StreamVersion.objects.filter(
            operator_id=collector.operator_id, is_latest=True, config__nodes__contains=reader
        )
        .select_related("stream")
        .order_by("stream__name", "stream_id")
    )


def _failed_records(
    collector: Collector, readers: list[StreamVersion], *, offset: int
) -> list[FailedRecord]:
    """A page of the collector's FAILED records, newest first, each with the node that
    failed it (and the stream of that node when exactly one stream reading the
    collector has a node of that id)."""
    nodes: dict[str, list[StreamVersion]] = {}
    for version in readers:
        for node in version.config.get("nodes", []):
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                nodes.setdefault(node["id"], []).append(version)
    records = Record.objects.filter(
        operator_id=collector.operator_id, collector=collector, status=Record.Status.FAILED
    ).order_by("-received_at", "-id")[offset : offset + FAILED_PAGE_SIZE]
    failed = []
    for record in records:
        node_id, node_name, reason = Failure.read(record.failure_reason)
        holders = nodes.get(node_id, [])
        stream = holders[0].stream if len(holders) == 1 else None
        payload = dumps_pretty(record.payload)
        if len(payload) > PAYLOAD_SHOWN_CHARACTERS:
            payload = payload[:PAYLOAD_SHOWN_CHARACTERS] + "\n…"
        failed.append(
            FailedRecord(
                record=record,
                node_id=node_id,
                node_name=node_name,
                reason=reason,
                stream_id=stream.pk if stream else None,
                stream_name=stream.name if stream else "",
                payload=payload,
            )
        )
    return failed


def _page_number(raw: str | None, pages: int) -> int:
    """The page asked for, within 1..pages (anything else: the nearest page)."""
    try:
        number = int(raw or 1)
    except ValueError:
        return 1
    return min(max(number, 1), pages)


def curl_example(request, collector: Collector) -> str:
    """Two shell commands that send a record to the collector: a token for an
    application's client credentials (placeholders, never a real secret), then the
    records, sent with it."""
    token_url = request.build_absolute_uri(reverse("oauth-token"))
    data_url = request.build_absolute_uri(
        reverse("collector-data", kwargs={"collector_id": str(collector.pk)})
    )
    credentials = json.dumps(
        {
            "client_id": "YOUR_CLIENT_ID",
            "client_secret": "YOUR_CLIENT_SECRET",
            "grant_type": "client_credentials",
            "audience": settings.TALLY["API_AUDIENCE"],
        }
    )
    now = timezone.now().replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = json.dumps(
        {
            "data": [
                {
                    "id": "event-0001",
                    "timestamp": now,
                    "type": "usage",
                    "customerId": "customer-1",
                    "quantity": 1,
                }
            ]
        }
    )
    return "\n".join(
        [
            "# 1. A token for an application with the online-collection:ingest:collectors scope",
            f"TOKEN=$(curl -s {shlex.quote(token_url)} \\",
            "  -H 'Content-Type: application/json' \\",
            f"  -d {shlex.quote(credentials)} \\",
            """  | sed -E 's/.*"access_token": *"([^"]+)".*/\\1/')""",
            "",
            "# 2. Records: one object, or an array of up to 10,000",
            f"curl -s {shlex.quote(data_url)} \\",
            '  -H "Authorization: Bearer $TOKEN" \\',
            "  -H 'Content-Type: application/json' \\",
            f"  -d {shlex.quote(body)}",
        ]
    )


@operator_page
@require_safe
def collectors(request):
    """`/dashboard/collectors/`: the live collectors with their records by status (one
    query, whatever their number)."""
    found = list(
        collectors_with_counts(Collector.objects.live().filter(operator=request.operator)).order_by(
            "name", "id"
        )
    )
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/collectors.html",
        {"title": "Collectors", "collectors": found, "now": timezone.now()},
    )


@operator_page
@require_safe
def collector_detail(request, collector_id):
    """`/dashboard/collectors/<id>/`: status, ingestion URL and example, counts by
    status, the streams reading it, and its failed records a page at a time."""
    collector = operator_object_or_404(request, Collector.objects.live(), pk=collector_id)
    now = timezone.now()
    stats = collector_stats(collector=collector, now=now)
    failed_total = stats["counts"]["FAILED"]
    pages = max(1, math.ceil(failed_total / FAILED_PAGE_SIZE))
    page = _page_number(request.GET.get("page"), pages)
    readers = _collector_readers(collector)
    failed = (
        _failed_records(collector, readers, offset=(page - 1) * FAILED_PAGE_SIZE)
        if failed_total
        else []
    )
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/collectors_detail.html",
        {
            "title": collector.name,
            "now": now,
            "collector": collector,
            "stats": stats,
            "counts": [
                (status, label, stats["counts"][status], help_text)
                for status, label, help_text in STATUS_CARDS
            ],
            "last_ingestion_at": collector.ingestions.order_by("-received_at")
            .values_list("received_at", flat=True)
            .first(),
            "ingestion_url": request.build_absolute_uri(
                reverse("collector-data", kwargs={"collector_id": str(collector.pk)})
            ),
            "curl_example": curl_example(request, collector),
            "readers": readers,
            "failed": failed,
            "failed_total": failed_total,
            "page": page,
            "pages": pages,
            "first_shown": (page - 1) * FAILED_PAGE_SIZE + 1,
            "last_shown": (page - 1) * FAILED_PAGE_SIZE + len(failed),
        },
    )


@operator_page
@require_POST
def collector_requeue(request, collector_id):
    """Put the collector's FAILED records back in the queue (admins only: the access
    gate refuses viewers): the records named by `record`, or with `all` every failed
    one (REQUEUE_AT_ONCE at a time). A worker then processes them again."""
    collector = operator_object_or_404(request, Collector.objects.live(), pk=collector_id)
    back = reverse("dashboard:collectors-detail", kwargs={"collector_id": collector.pk})
    page = request.POST.get("page", "")
    if _DIGITS.fullmatch(page):
        back = f"{back}?page={page}"
    failed = Record.objects.filter(
        operator_id=request.operator.pk, collector=collector, status=Record.Status.FAILED
    ).order_by()
    if request.POST.get("all"):
        ids = list(failed.values_list("pk", flat=True)[:REQUEUE_AT_ONCE])
        if not ids:
            messages.info(request, "No record of this collector has failed: nothing to re-queue.")
            return redirect(back)
        count = records_requeue_failed(record_ids=ids)
        more = " Re-queue again for the rest." if len(ids) == REQUEUE_AT_ONCE else ""
        messages.success(
            request,
            f"{count:,} failed record{'s' if count != 1 else ''} queued again: workers "
            f"process them within moments.{more}",
        )
        return redirect(back)

    wanted = _record_ids(request.POST.getlist("record"))
    if not wanted:
        messages.error(request, "Choose a failed record to re-queue (its id was not sent).")
        return redirect(back)
    ids = list(failed.filter(pk__in=wanted).values_list("pk", flat=True))
    count = records_requeue_failed(record_ids=ids) if ids else 0
    if count == 0:
        messages.warning(
            request, "That record is no longer failed (re-queued already?): nothing was changed."
        )
    else:
        messages.success(
            request,
            f"{count:,} record{'s' if count != 1 else ''} queued again: a worker processes "
            f"{'them' if count != 1 else 'it'} within moments.",
        )
    return redirect(back)


def _record_ids(values: list[str]) -> list[int]:
    """The record ids sent, leaving out anything that is not one."""
    ids = []
    for value in values:
        value = value.strip()
        if _DIGITS.fullmatch(value) and 0 < int(value) <= _MAX_RECORD_ID:
            ids.append(int(value))
    return ids
