"""The platform's view across operators (the platform API): KPIs, per-operator figures,
connector adoption and the billing report.

Where every figure comes from:

* API calls (by endpoint category), gateway requests (by connector) and events
  ingested (by record type): the usage counters `tenants` keeps (`tenants.accounting`
  says what counts), read only through `_usage_in_windows`: monthly, dekad and daily rollups
  plus the deltas not folded yet, so a whole day is never read from hourly rows or
  records.
  Counts still in Redis arrive with the next fold (Beat, every minute).
* Connections: derived from the rows that configure them (`connection_counts`).
* Storage: an estimate, cheap enough for every report (`storage_estimate`).

Figures are all-time unless a range is given; ranges are whole UTC days, `since`
inclusive and `until` exclusive.
"""

from __future__ import annotations

import datetime
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, localcontext

from django.db import connection
from django.db.models import Count, F, Q

from collection.models import Collector, CustomerEventRollup, EventRollup, Record
from metering.models import CycleRollup, UsageRollup, UsageTypeRollup, WebhookEndpoint
from streams.models import Connector, Stream, StreamVersion
from tenants.accounting import API_CALL, API_CATEGORIES, EVENT, GATEWAY_REQUEST
from tenants.models import Operator, PlatformSettings
from tenants.selectors import UsageWindow, usage_windows

HTTP_NODE_TYPE = "transforms/http"
MAX_REPORT_DAYS = 366


# -- Usage counts -------------------------------------------------------------------------


# Usage attribute per counter kind; other kinds are not reported by the platform API.
_USAGE_FIELD_BY_KIND = {API_CALL: "api_calls", GATEWAY_REQUEST: "gateway_requests", EVENT: "events"}


@dataclass
class Usage:
    """One operator's counts (or the platform's), by kind and key."""

    api_calls: dict[str, int] = field(default_factory=dict)  # by endpoint category
    gateway_requests: dict[str, int] = field(default_factory=dict)  # by connector
    events: dict[str, int] = field(default_factory=dict)  # by record type

    @property
    def api_call_total(self) -> int:
        return sum(self.api_calls.values())

    @property
    def gateway_request_total(self) -> int:
        return sum(self.gateway_requests.values())

    @property
    def event_total(self) -> int:
        return sum(self.events.values())


def usage_by_operator(
    *,
    since: datetime.date | None = None,
    until: datetime.date | None = None,
    operator_ids: Iterable[uuid.UUID] | None = None,
    kinds: Iterable[str] | None = None,
) -> dict[uuid.UUID, Usage]:
    """Each operator's counts over the days from `since` to `until` (all time by
    default); operators that counted nothing are absent."""
    window = UsageWindow(since, until, None if kinds is None else tuple(kinds))
    return _usage_in_windows([window], operator_ids=operator_ids)[0]


def _usage_in_windows(
    windows: list[UsageWindow], *, operator_ids: Iterable[uuid.UUID] | None = None
) -> list[dict[uuid.UUID, Usage]]:
    """Each window's counts per operator, from one statement. The one place the platform
    reads usage counters: `tenants.selectors.usage_windows` (monthly, dekad and daily
    rollups plus the deltas not folded yet; never hourly rows or records)."""
    found: list[dict[uuid.UUID, Usage]] = [{} for _ in windows]
    # Rows are unique per (window, operator, kind, key): each count is set, not added.
    for index, operator_id, kind, key, count in usage_windows(windows, operator_ids=operator_ids):
        name = _USAGE_FIELD_BY_KIND.get(kind)
        if name is not None:
            usage = found[index].get(operator_id)
            if usage is None:
                usage = found[index][operator_id] = Usage()
            getattr(usage, name)[key] = count
    return found


# -- Connections --------------------------------------------------------------------------


@dataclass
class Connections:
    active: int = 0
    inactive: int = 0

    @property
    def total(self) -> int:
        return self.active + self.inactive

    def add(self, other: Connections) -> None:
        self.active += other.active
        self.inactive += other.inactive


# One row per operator and stream state: the `transforms/http` nodes of every stream's
# current configuration (the latest version, the one the runtime runs). A configuration
# whose `nodes` is not an array has none.
_HTTP_NODES_SQL = """
SELECT v.operator_id, s.enabled, count(*)
FROM {versions} v
JOIN {streams} s ON s.id = v.stream_id
CROSS JOIN LATERAL jsonb_array_elements(
    CASE jsonb_typeof(v.config -> 'nodes') WHEN 'array' THEN v.config -> 'nodes'
    ELSE '[]'::jsonb END
) AS node
WHERE v.is_latest AND node ->> 'type' = %(node_type)s {only}
GROUP BY v.operator_id, s.enabled
"""


def connection_counts(
    *, operator_ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, dict[str, Connections]]:
    """Each operator's connections per connector slug (operators with none are absent).

    Connections are derived from what configures them, never stored, so they cannot
    drift from it. Three grouped queries:

    1. `online-collection`: every collector, inactive once deleted (`deleted_at`; a
       deleted collector keeps its records, so it stays a connection).
    2. `webhook`: the operator's webhook endpoint (one at most), inactive when disabled.
    3. `http`: every `transforms/http` node of a stream's current configuration, active
       while the stream is enabled.
    """
    ids = None if operator_ids is None else list(operator_ids)
    found: dict[uuid.UUID, dict[str, Connections]] = defaultdict(dict)

    def only(rows):
        return rows if ids is None else rows.filter(operator_id__in=ids)

    deleted = Q(deleted_at__isnull=False)
    collectors = (
        only(Collector.objects.order_by())
        .values("operator_id")
        .annotate(active=Count("pk", filter=~deleted), inactive=Count("pk", filter=deleted))
    )
    for row in collectors:
        found[row["operator_id"]][Connector.ONLINE_COLLECTION] = Connections(
            row["active"], row["inactive"]
        )
    for operator_id, enabled in only(WebhookEndpoint.objects.order_by()).values_list(
        "operator_id", "enabled"
    ):
        found[operator_id][Connector.WEBHOOK] = Connections(int(enabled), int(not enabled))

    sql = _HTTP_NODES_SQL.format(
        versions=StreamVersion._meta.db_table,
        streams=Stream._meta.db_table,
        only="" if ids is None else "AND v.operator_id = ANY(%(ids)s)",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"node_type": HTTP_NODE_TYPE, "ids": ids})
        for operator_id, enabled, count in cursor.fetchall():
            counts = found[operator_id].setdefault(Connector.HTTP, Connections())
            counts.add(Connections(count, 0) if enabled else Connections(0, count))
    return dict(found)


def _active_connections(connections: dict[str, Connections]) -> int:
    return sum(counts.active for counts in connections.values())


# -- Summary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorCounts:
    active: int
    suspended: int
    total: int


@dataclass(frozen=True)
class PlatformSummary:
    operators: OperatorCounts
    api_calls: int
    gateway_requests: int
    events_ingested: int
    active_connections: int


def platform_summary() -> PlatformSummary:
    """The platform's KPIs, all time."""
    by_status = dict(Operator.objects.order_by().values_list("status").annotate(count=Count("pk")))
    usage = usage_by_operator(kinds=[API_CALL, GATEWAY_REQUEST, EVENT]).values()
    return PlatformSummary(
        operators=OperatorCounts(
            active=by_status.get(Operator.Status.ACTIVE, 0),
            suspended=by_status.get(Operator.Status.SUSPENDED, 0),
            total=sum(by_status.values()),
        ),
        api_calls=sum(counts.api_call_total for counts in usage),
        gateway_requests=sum(counts.gateway_request_total for counts in usage),
        events_ingested=sum(counts.event_total for counts in usage),
        active_connections=sum(
            _active_connections(counts) for counts in connection_counts().values()
        ),
    )


# -- Per operator -------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorFigures:
    id: uuid.UUID
    name: str
    status: str
    created_at: datetime.datetime
    last_active_at: datetime.datetime | None
    active_connections: int
    api_calls: int
    events_ingested: int


# API sort name -> Operator field, for the sorts the database can do before paging.
OPERATOR_FIELD_SORTS = {
    "name": "name",
    "status": "status",
    "createdAt": "created_at",
    "lastActiveAt": "last_active_at",
}
# API sort name -> figure, for sorts on counts (every operator's figures are needed).
OPERATOR_FIGURE_SORTS = {
    "apiCalls": "api_calls",
    "eventsIngested": "events_ingested",
    "activeConnections": "active_connections",
}
OPERATOR_SORTS = [*OPERATOR_FIELD_SORTS, *OPERATOR_FIGURE_SORTS]
DEFAULT_OPERATOR_SORT = "name"


def operator_figures_page(
    *, sort_by: str, descending: bool, skip: int, limit: int
) -> tuple[list[OperatorFigures], int]:
    """One page of operators with their figures (all time), and how many there are.

    Ties are broken by id, in the same direction, so pages are stable. An operator never
    active (`lastActiveAt` null) counts as the least recently active: first ascending,
    last descending.

    1. Sorting by a column of the operator: the database orders and pages, and figures
       are read for that page only.
    2. Sorting by a figure: every operator's figures are read, then sorted and paged
       here (a few thousand operators: one pass over their counters either way).
    """
    operators = Operator.objects.only("id", "name", "status", "created_at", "last_active_at")
    total = operators.count()
    if sort_by in OPERATOR_FIELD_SORTS:
        column = F(OPERATOR_FIELD_SORTS[sort_by])
        pk = F("pk")
        if descending:
            ordering = [column.desc(nulls_last=True), pk.desc()]
        else:
            ordering = [column.asc(nulls_first=True), pk.asc()]
        page = list(operators.order_by(*ordering)[skip : skip + limit]) if limit else []
        return _figures(page, operator_ids=[operator.pk for operator in page]), total
    figures = _figures(list(operators), operator_ids=None)
    attribute = OPERATOR_FIGURE_SORTS[sort_by]
    figures.sort(key=lambda item: (getattr(item, attribute), item.id), reverse=descending)
    return figures[skip : skip + limit], total


def _figures(operators: list[Operator], *, operator_ids) -> list[OperatorFigures]:
    if not operators:
        return []
    usage = usage_by_operator(operator_ids=operator_ids, kinds=[API_CALL, EVENT])
    connections = connection_counts(operator_ids=operator_ids)
    figures = []
    for operator in operators:
        counts = usage.get(operator.pk, Usage())
        figures.append(
            OperatorFigures(
                id=operator.pk,
                name=operator.name,
                status=operator.status,
                created_at=operator.created_at,
                last_active_at=operator.last_active_at,
                active_connections=_active_connections(connections.get(operator.pk, {})),
                api_calls=counts.api_call_total,
                events_ingested=counts.event_total,
            )
        )
    return figures


# -- Per connector ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorFigures:
    id: str
    name: str
    direction: str
    operators_using: int
    connections: Connections
    gateway_calls: int


def connector_figures() -> list[ConnectorFigures]:
    """Every connector of the catalogue with its adoption, all time. An operator uses a
    connector while it has an active connection of it; gateway calls count every
    request through its connections, deleted and disabled ones included."""
    calls: dict[str, int] = defaultdict(int)
    for usage in usage_by_operator(kinds=[GATEWAY_REQUEST]).values():
        for key, count in usage.gateway_requests.items():
            calls[key] += count
    connections: dict[str, Connections] = defaultdict(Connections)
    using: dict[str, int] = defaultdict(int)
    for by_connector in connection_counts().values():
        for slug, counts in by_connector.items():
            connections[slug].add(counts)
            using[slug] += counts.active > 0
    return [
        ConnectorFigures(
            id=connector.id,
            name=connector.name,
            direction=connector.direction,
            operators_using=using[connector.id],
            connections=connections[connector.id],
            gateway_calls=calls[connector.id],
        )
        for connector in Connector.objects.all()
    ]


# -- Storage ------------------------------------------------------------------------------

# Below this many stored records a table's size is mostly its fixed overhead (empty
# index pages, the first page of every partition), so bytes per record would say
# nothing; this typical figure is used instead: a record row with its indexes (~450
# bytes: envelope columns, a small JSON payload, three index entries) and its share of
# the rollups.
DEFAULT_BYTES_PER_RECORD = 512
MIN_RECORDS_FOR_ESTIMATE = 10_000

# The rollups whose rows belong to operators and grow with their records.
ROLLUP_MODELS = (EventRollup, CustomerEventRollup, UsageRollup, UsageTypeRollup, CycleRollup)

# Sizes from the catalog only (no table is read): every partition of the record table
# (its heap, TOAST and indexes) and every rollup table, and the records the planner
# statistics count (`reltuples`, kept by autovacuum/ANALYZE; -1 while never analysed).
_STORAGE_SQL = """
SELECT
    (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
       FROM pg_partition_tree(%(records)s::regclass) t)
  + (SELECT coalesce(sum(pg_total_relation_size(r::regclass)), 0)
       FROM unnest(%(rollups)s::text[]) r),
    (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)
       FROM pg_partition_tree(%(records)s::regclass) t
       JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf)
"""


def storage_bytes_per_record() -> int:
    """What one stored record costs the platform, rollups included: the size of the
    record table and the rollup tables over the records stored, from the catalog.
    `DEFAULT_BYTES_PER_RECORD` while there are too few records to tell."""
    with connection.cursor() as cursor:
        cursor.execute(
            _STORAGE_SQL,
            {
                "records": Record._meta.db_table,
                "rollups": [model._meta.db_table for model in ROLLUP_MODELS],
            },
        )
        total_bytes, records = cursor.fetchone()
    if records < MIN_RECORDS_FOR_ESTIMATE:
        return DEFAULT_BYTES_PER_RECORD
    return round(Decimal(total_bytes) / Decimal(records))


def storage_estimate(
    *, until: datetime.date, operator_ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, int]:
    """Bytes each operator's records and rollups take, as of the start of `until`.

    An estimate, by design: counting an operator's stored rows exactly would mean
    reading its records or hourly rollups, which a report must not. Instead:

    1. Records stored = events ingested before `until` (the `event` counters, all
       history, one grouped read of the daily rollups). Records are never deleted.
    2. Bytes per record = the size of the record and rollup tables over the records
       they hold, from the catalog (`storage_bytes_per_record`). Rollup rows grow with
       the records that fill them, so they are shared out in proportion to records;
       payloads are assumed of average size.
    3. Storage = 1 * 2, a whole number of bytes.

    The factor in 2 is today's, so a past range's storage moves a little as the tables
    grow or are vacuumed; the records in 1 do not.
    """
    usage = usage_by_operator(until=until, operator_ids=operator_ids, kinds=[EVENT])
    records = {operator_id: counts.event_total for operator_id, counts in usage.items()}
    return _storage_of(records, storage_bytes_per_record())


def _storage_of(records: dict[uuid.UUID, int], per_record: int) -> dict[uuid.UUID, int]:
    return {operator_id: count * per_record for operator_id, count in records.items()}


# -- The billing report -------------------------------------------------------------------


@dataclass(frozen=True)
class BillingWeights:
    """Billable units per unit of usage, from the platform settings."""

    api_call: Decimal
    gateway_request: Decimal
    event: Decimal
    storage_gb: Decimal

    @classmethod
    def current(cls) -> BillingWeights:
        row = PlatformSettings.load()
        return cls(
            api_call=row.billing_api_call_weight,
            gateway_request=row.billing_gateway_request_weight,
            event=row.billing_event_weight,
            storage_gb=row.billing_storage_gb_weight,
        )


@dataclass(frozen=True)
class ReportLine:
    """One operator's usage over the report's range (or the totals: id and name None)."""

    id: uuid.UUID | None
    name: str | None
    api_calls_by_category: dict[str, int]
    gateway_requests_by_connector: dict[str, int]
    events_by_type: dict[str, int]
    storage_bytes: int
    billable_units: Decimal


@dataclass(frozen=True)
class UsageReport:
    start: datetime.date
    end: datetime.date
    operators: list[ReportLine]
    totals: ReportLine
    # Column order for tables: every category, connector and event type of the report.
    categories: list[str]
    connectors: list[str]
    event_types: list[str]


# Arithmetic on billable units: every digit kept (the default context rounds at 28),
# and a rounding raises instead of passing unseen. Weights of 20 digits times 64-bit
# counts stay far below 200 digits.
EXACT = Context(prec=200, traps=[Inexact])


def _exact_sum(values: Iterable[Decimal]) -> Decimal:
    with localcontext(EXACT):
        return sum(values, Decimal(0))


def billable_units(
    *, api_calls: int, gateway_requests: int, events: int, storage_bytes: int, weights
) -> Decimal:
    """api calls * weight + gateway requests * weight + events * weight + storage GB *
    weight, exactly (a rounding would be an error here, so it raises)."""
    # Decimal gigabytes (10^9 bytes); exact, as a shift of the decimal point.
    storage_gb = Decimal(storage_bytes).scaleb(-9)
    with localcontext(EXACT):
        return (
            api_calls * weights.api_call
            + gateway_requests * weights.gateway_request
            + events * weights.event
            + storage_gb * weights.storage_gb
        )


def usage_report(*, start: datetime.date, end: datetime.date) -> UsageReport:
    """Every operator's usage from `start` to `end` (inclusive UTC days), for invoicing.

    Operators listed, by name: those that existed by the end of the range, and any with
    usage in it or records stored by its end (counts may predate an operator's row when
    they were backfilled). Counts come from the rollups; storage is `storage_estimate`
    as of the end of the range; billable units use today's weights.
    """
    if end < start:
        raise ValueError("end is before start")
    until = end + datetime.timedelta(days=1)
    # The range's counts and every event before its end (the records stored by then,
    # for `storage_estimate`) in one statement.
    usage, stored = _usage_in_windows(
        [UsageWindow(start, until), UsageWindow(None, until, (EVENT,))]
    )
    records = {operator_id: counts.event_total for operator_id, counts in stored.items()}
    storage = _storage_of(records, storage_bytes_per_record())
    moment = datetime.datetime.combine(until, datetime.time(), tzinfo=datetime.UTC)
    weights = BillingWeights.current()

    categories = _ordered_keys(API_CATEGORIES, (u.api_calls for u in usage.values()))
    catalogue = list(Connector.objects.values_list("id", flat=True))
    connectors = _ordered_keys(catalogue, (u.gateway_requests for u in usage.values()))
    event_types = _ordered_keys((), (u.events for u in usage.values()))

    lines = []
    # Every operator is read (a few thousand short rows) and the listing decided here:
    # the database would need the counted ids sent back to it.
    operators = Operator.objects.order_by("name", "pk").values_list("pk", "name", "created_at")
    for operator_id, name, created_at in operators:
        counts = usage.get(operator_id)
        if counts is None:
            if created_at >= moment and operator_id not in storage:
                continue
            counts = Usage()
        lines.append(
            _line(
                operator_id,
                name,
                {key: counts.api_calls.get(key, 0) for key in categories},
                {key: counts.gateway_requests.get(key, 0) for key in connectors},
                dict(sorted(counts.events.items())),
                storage.get(operator_id, 0),
                weights,
            )
        )
    # Every total is the sum of its column (units too: they are exact, so this equals
    # the units of the summed counts).
    totals = ReportLine(
        id=None,
        name=None,
        api_calls_by_category={
            key: sum(line.api_calls_by_category[key] for line in lines) for key in categories
        },
        gateway_requests_by_connector={
            key: sum(line.gateway_requests_by_connector[key] for line in lines)
            for key in connectors
        },
        events_by_type={
            key: sum(line.events_by_type.get(key, 0) for line in lines) for key in event_types
        },
        storage_bytes=sum(line.storage_bytes for line in lines),
        billable_units=_exact_sum(line.billable_units for line in lines),
    )
    return UsageReport(start, end, lines, totals, categories, connectors, event_types)


def _line(operator_id, name, api_calls, gateway, events, storage_bytes, weights) -> ReportLine:
    return ReportLine(
        id=operator_id,
        name=name,
        api_calls_by_category=api_calls,
        gateway_requests_by_connector=gateway,
        events_by_type=events,
        storage_bytes=storage_bytes,
        billable_units=billable_units(
            api_calls=sum(api_calls.values()),
            gateway_requests=sum(gateway.values()),
            events=sum(events.values()),
            storage_bytes=storage_bytes,
            weights=weights,
        ),
    )


def _ordered_keys(known: Iterable[str], counted: Iterable[dict[str, int]]) -> list[str]:
    """The known keys in their order, then any other key counted, sorted."""
    known = list(known)
    extra = set().union(*counted) - set(known)
    return [*known, *sorted(extra)]
