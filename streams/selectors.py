"""Reads of streams: a stream as the API shows it, its export, projections, cursors."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import uuid
from typing import Any

from django.db.models import Q, QuerySet

from common.json import dumps, format_datetime, loads
from streams.models import Stream, StreamKey, StreamVersion

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


def cursor_encode(stream: Stream) -> str:
    position = [stream.created_at.isoformat(), str(stream.id)]
    return base64.urlsafe_b64encode(dumps(position)).decode().rstrip("=")


def streams_after(queryset: QuerySet, cursor: str | None) -> QuerySet:
    """The streams after the cursor's position, in (created_at, id) order: stable under
    inserts, since a new stream sorts after every existing one."""
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
