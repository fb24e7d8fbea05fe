"""Reads of streams: a stream as the API shows it, its export, projections, cursors;
aggregation stores and the lookup of their sessions."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import uuid
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from common.json import dumps, format_datetime, loads
from streams.models import (
    AggregationSession,
    AggregationStore,
    Stream,
    StreamKey,
    StreamVersion,
)
from streams.runtime.sessions import session_key

SCHEMA_VERSION = 1


class VersionNotFound(LookupError):
    """No version of the stream has that tag."""


def stream_version(stream: Stream, tag: str | None = None) -> StreamVersion:
    """The latest version, or the snapshot with this tag."""
    versions = stream.versions.all()
    found = (
        versions.filter(is_latest=False, tag=tag).first()
        if tag
        else (versions.filter(is_latest=True).first())
    )
    if found is None:
        raise VersionNotFound(f"The stream has no version tagged {tag!r}." if tag else "")
    return found


def stream_config_with_keys(
    stream: Stream, version: StreamVersion, keys: list[StreamKey] | None = None
) -> dict[str, Any]:
    """The configuration as exported: as imported, with the generated keys on their
    nodes (read-only) and the version's tag. `keys`: the stream's, when already loaded."""
    config = copy.deepcopy(version.config)
    if keys is None:
        keys = list(StreamKey.objects.filter(stream=stream))
    keys = {(key.node_id, key.kind): str(key.value) for key in keys}
    for node in config.get("nodes", []):
        for kind in StreamKey.Kind.values:
            if (node.get("id"), kind) in keys:
                node[kind] = keys[(node["id"], kind)]
    if version.tag:
        config["tag"] = version.tag
    return config


def streams_documents(streams: list[Stream]) -> list[dict[str, Any]]:
    """The latest documents of many streams in two queries, whatever their number."""
    ids = [stream.pk for stream in streams]
    latest = {
        version.stream_id: version
        for version in StreamVersion.objects.filter(stream_id__in=ids, is_latest=True)
    }
    keys: dict[Any, list[StreamKey]] = {stream_id: [] for stream_id in ids}
    for key in StreamKey.objects.filter(stream_id__in=ids):
        keys[key.stream_id].append(key)
    return [stream_document(s, latest[s.pk], keys[s.pk]) for s in streams]


def stream_document(
    stream: Stream, version: StreamVersion, keys: list[StreamKey] | None = None
) -> dict[str, Any]:
    """A stream as GET answers it: its settings and the version's configuration."""
    config = stream_config_with_keys(stream, version, keys)
    return {
        **config,
        "id": str(stream.id),
        "solutionId": str(stream.solution_id),
        "name": stream.name,
        "description": stream.description,
        "processingType": stream.processing_type,
        "enabled": stream.enabled,
        "schedule": stream.schedule or None,
        "schemaVersion": version.schema_version or SCHEMA_VERSION,
        "tag": version.tag or None,
        "cas": stream.cas,
        "createdAt": format_datetime(stream.created_at),
        "createdBy": stream.created_by,
        "updatedAt": format_datetime(stream.updated_at),
        "updatedBy": stream.updated_by,
    }


def project(document: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Only these fields of a document; a dot goes into objects and lists
    (`nodes.name` keeps each node's name)."""
    result: dict[str, Any] = {}
    for field in fields:
        _copy_path(document, result, field.split("."))
    return result


def _copy_path(source: Any, target: Any, path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if not isinstance(source, dict) or head not in source:
        return
    value = source[head]
    if not rest:
        target[head] = value
    elif isinstance(value, list):
        items = target.setdefault(head, [{} for _ in value])
        for item, into in zip(value, items, strict=False):
            _copy_path(item, into, rest)
    elif isinstance(value, dict):
        _copy_path(value, target.setdefault(head, {}), rest)


class BadCursor(ValueError):
    """A cursor Tally did not make."""


def cursor_encode(row: Stream | AggregationStore) -> str:
    """The position of a row of a (created_at, id) ordered list: streams, stores."""
    position = [row.created_at.isoformat(), str(row.id)]
    return base64.urlsafe_b64encode(dumps(position)).decode().rstrip("=")


def streams_after(queryset: QuerySet, cursor: str | None) -> QuerySet:
    """The streams after the cursor's position, in (created_at, id) order: stable under
    inserts, since a new stream sorts after every existing one."""
    return _created_after(queryset, cursor)


def _created_after(queryset: QuerySet, cursor: str | None) -> QuerySet:
    queryset = queryset.order_by("created_at", "id")
    if not cursor:
        return queryset
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, stream_id = loads(raw)
        created_at = datetime.datetime.fromisoformat(created_at)
        stream_id = uuid.UUID(stream_id)
    except (binascii.Error, ValueError, TypeError):
        raise BadCursor("This cursor is not one Tally gave out.") from None
    return queryset.filter(
        Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=stream_id)
    )


RESOURCE_TYPES = ("onlineCollector", "meterKey", "scriptAggregationStore", "dataAggregationStore")


class BadResourceRef(ValueError):
    """A resourceRefs value that is not `<type>:<id>` (or `<type>:*`)."""


def resource_refs_parse(values: list[str]) -> list[tuple[str, uuid.UUID | None]]:
    """(type, id) pairs from `resourceRefs` values; id None for `*` (any)."""
    refs = []
    for value in values:
        kind, _, ident = value.partition(":")
        if kind not in RESOURCE_TYPES or not ident:
            raise BadResourceRef(
                f"Each resourceRefs value is <type>:<id> or <type>:*, with type one of "
                f"{', '.join(RESOURCE_TYPES)}."
            )
        if ident == "*":
            refs.append((kind, None))
            continue
        try:
            refs.append((kind, uuid.UUID(ident)))
        except ValueError:
            raise BadResourceRef(f"The id in a {kind} reference must be a UUID or *.") from None
    return refs


def _collector_node(collector_id: uuid.UUID | None) -> list[dict]:
    node: dict[str, Any] = {"type": "readers/online_collection"}
    if collector_id is not None:
        node["params"] = {"collectorId": str(collector_id)}
    return [node]


def streams_referencing(queryset: QuerySet, refs: list[tuple[str, uuid.UUID | None]]):
    """The streams whose latest version uses any of these resources (OR)."""
    condition = Q()
    for kind, ident in refs:
        if kind == "onlineCollector":
            condition |= Q(
                versions__is_latest=True,
                versions__config__nodes__contains=_collector_node(ident),
            )
        else:
            key = Q(keys__resource=kind)
            condition |= key & Q(keys__value=ident) if ident is not None else key
    return queryset.filter(condition).distinct()


def versions_referencing(stream: Stream, versions: QuerySet, refs) -> QuerySet:
    """The versions of a stream that use any of these resources (OR): a collector in
    their configuration, or a node that holds a matching generated key."""
    condition = Q(pk__in=[])
    for kind, ident in refs:
        if kind == "onlineCollector":
            condition |= Q(config__nodes__contains=_collector_node(ident))
            continue
        keys = StreamKey.objects.filter(stream=stream, resource=kind)
        if ident is not None:
            keys = keys.filter(value=ident)
        for node_id in keys.values_list("node_id", flat=True):
            condition |= Q(config__nodes__contains=[{"id": node_id}])
    return versions.filter(condition)


def execution_document(execution) -> dict[str, Any]:
    """An execution as the API answers it."""
    return {
        "id": str(execution.pk),
        "streamId": str(execution.stream_id),
        "status": execution.status,
        "trigger": execution.trigger,
        "createdAt": execution.created_at,
        "startedAt": execution.started_at,
        "endedAt": execution.ended_at,
        "recordsRead": execution.records_read,
        "recordsFailed": execution.records_failed,
        "nodes": execution.node_counts,
        "errors": execution.errors,
    }


def log_page(stream, *, before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """The stream's log, newest first, `limit` lines older than line `before`."""
    from streams.models import StreamLogLine

    lines = StreamLogLine.objects.filter(operator_id=stream.operator_id, stream=stream)
    if before is not None:
        lines = lines.filter(id__lt=before)
    page = list(lines.order_by("-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    documents = [
        {
            "id": line.id,
            "nodeId": line.node_id,
            "nodeName": line.node_name,
            "level": line.level,
            "message": line.message,
            "payload": line.payload,
            "createdAt": line.created_at,
        }
        for line in page
    ]
    return documents, (page[-1].id if more and page else None)


# Aggregation stores: an aggregator node's sessions, found by the node's storeId.


class StoreNodeGone(LookupError):
    """The store's node is not in its stream's latest version any more."""


class FieldValuesMismatch(ValueError):
    """As many field values as none of the store's field lists has."""


def stores_list(*, operator, stream_id: uuid.UUID | None = None) -> QuerySet:
    """An operator's stores, oldest first (new ones come last, so a cursor stays valid),
    with their stream and their session count (`session_count`)."""
    stores = (
        AggregationStore.objects.filter(operator=operator)
        .select_related("stream")
        .annotate(session_count=store_session_count())
    )
    if stream_id is not None:
        stores = stores.filter(stream_id=stream_id)
    return stores.order_by("created_at", "id")


def store_session_count() -> Coalesce:
    """A store's number of sessions, as an annotation: a subquery counted on the
    (store, key) index for only the rows a page shows, not a join grouping them all."""
    sessions = (
        AggregationSession.objects.filter(store=OuterRef("pk"))
        .order_by()
        .values("store")
        .annotate(count=Count("id"))
        .values("count")
    )
    return Coalesce(Subquery(sessions, output_field=IntegerField()), 0)


def stores_after(queryset: QuerySet, cursor: str | None) -> QuerySet:
    """The stores after the cursor's position (see `streams_after`)."""
    return _created_after(queryset, cursor)


def stores_documents(stores: list[AggregationStore]) -> list[dict[str, Any]]:
    """Stores as the list answers them, in one query for any number of stores: their
    node's name and group fields come from their stream's latest version. A store
    whose node is gone from it has no node name and no group fields."""
    latest = StreamVersion.objects.filter(
        stream_id__in={store.stream_id for store in stores}, is_latest=True
    ).values_list("stream_id", "config")
    nodes = {
        (stream_id, node.get("id")): node for stream_id, config in latest for node in _nodes(config)
    }
    return [store_document(store, nodes.get((store.stream_id, store.node_id))) for store in stores]


def store_document(store: AggregationStore, node: dict[str, Any] | None) -> dict[str, Any]:
    """A store from `stores_list` (stream loaded, sessions counted) with its node."""
    return {
        "id": str(store.id),
        "kind": store.kind,
        "streamId": str(store.stream_id),
        "streamName": store.stream.name,
        "nodeId": store.node_id,
        "nodeName": node.get("name") if node is not None else None,
        "groupFields": store_group_fields(store.kind, node) if node is not None else [],
        "sessionCount": store.session_count,
        "createdAt": format_datetime(store.created_at),
    }


def store_node(store: AggregationStore) -> dict[str, Any] | None:
    """The store's node in its stream's latest version; None when it is not there."""
    config = (
        StreamVersion.objects.filter(stream_id=store.stream_id, is_latest=True)
        .values_list("config", flat=True)
        .first()
    )
    return next((node for node in _nodes(config) if node.get("id") == store.node_id), None)


def store_group_fields(kind: str, node: dict[str, Any]) -> list[list[str]]:
    """The field lists a store's session keys are made of, in key order: a data
    aggregator's one (`groupKeys[].field`), a script aggregator's one per rule
    (`groupByRules[].fields`). Entries that are not field names are left out: the runtime
    refuses such a node when it runs, so it has no sessions to find."""
    params = node.get("params")
    if not isinstance(params, dict):
        return []
    if kind == AggregationStore.Kind.DATA:
        rules = [params.get("groupKeys")]
    else:
        rules = params.get("groupByRules")
        rules = [rule.get("fields") if isinstance(rule, dict) else rule for rule in rules or []]
    field_lists = []
    for rule in rules:
        entries = rule if isinstance(rule, list) else []
        names = [entry.get("field") if isinstance(entry, dict) else entry for entry in entries]
        names = [name for name in names if isinstance(name, str) and name]
        if names:
            field_lists.append(names)
    return field_lists


def session_lookup(*, store: AggregationStore, values: list[str]) -> AggregationSession | None:
    """The session of `store` that group values (in the order of the group fields) make,
    as the aggregator keyed it; None when there is none.

    1. The store's node in the latest version gives its field lists; StoreNodeGone when
       the node is not there any more.
    2. The values must be as many as the fields of one of the lists (for a script store
       with several rules, the first such rule names the fields); FieldValuesMismatch,
       naming the lists, when they are not.
    3. `session_key(values)` is the key the runtime stored the session under.
    """
    node = store_node(store)
    if node is None:
        raise StoreNodeGone("The store's node is no longer in its stream's latest version.")
    field_lists = store_group_fields(store.kind, node)
    if not any(len(fields) == len(values) for fields in field_lists):
        raise FieldValuesMismatch(_field_count_message(field_lists, len(values)))
    return AggregationSession.objects.filter(
        operator_id=store.operator_id, store=store, key=session_key(values)
    ).first()


def session_document(session: AggregationSession) -> dict[str, Any]:
    """A session as the lookup answers it; `partials` (the running state of a data
    aggregator's operations) is the runtime's own and stays inside."""
    return {
        "createdAt": format_datetime(session.created_at),
        "updatedAt": format_datetime(session.updated_at),
        "timeoutAt": format_datetime(session.timeout_at) if session.timeout_at else None,
        "data": session.data,
        "meta": {key: value for key, value in session.meta.items() if key != "partials"},
    }


def _nodes(config: Any) -> list[dict[str, Any]]:
    nodes = config.get("nodes") if isinstance(config, dict) else None
    return [node for node in nodes or [] if isinstance(node, dict)]


def _field_count_message(field_lists: list[list[str]], sent: int) -> str:
    if not field_lists:
        return "The store's node names no group fields, so no session can be looked up."
    described = " or ".join(
        f"{len(fields)} field{'s' if len(fields) != 1 else ''} ({', '.join(fields)})"
        for fields in field_lists
    )
    which = "each of them" if len(field_lists) == 1 else "each field of one of them"
    return (
        f"The store groups by {described}: send one fieldValues value for {which}, "
        f"in that order (got {sent})."
    )
