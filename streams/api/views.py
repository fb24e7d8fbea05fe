"""Stream management: /stream-management/v1/streams, …/functions and …/solutions;
aggregation: /aggregation/v1/stores and the session lookup."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.pagination import MAX_LIMIT, query_int
from common.ids import uuid_or_none
from streams import selectors, services
from streams.api import schema
from streams.api.serializers import (
    SolutionSerializer,
    StreamImportSerializer,
    StreamPreviewSerializer,
    StreamUpdateSerializer,
)
from streams.catalogue import catalogue_json
from streams.models import AggregationStore, Solution, Stream, StreamExecution
from tenants.api.base import OperatorViewSet

READ, WRITE = "stream-management:read:streams", "stream-management:write:streams"
SESSIONS = "aggregation:read:sessions"
# What the import endpoint takes at the most (larger: 413 before parsing).
MAX_IMPORT_BYTES = 2 * 1024 * 1024
DEFAULT_LIMIT = 20

FIELDS = OpenApiParameter(
    "fields",
    str,
    description="Comma-separated fields to return; a dot goes into objects and lists "
    "(fields=name,nodes.name).",
)
TAG = OpenApiParameter("tag", str, description="A tagged version instead of the latest.")
RESOURCE_REFS = OpenApiParameter(
    "resourceRefs",
    str,
    many=True,
    description="Repeatable, any of them (OR): onlineCollector:<id>, meterKey:<key>, "
    "scriptAggregationStore:<id>, dataAggregationStore:<id>; * for any id.",
)


def _fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("fields")
    return [field.strip() for field in raw.split(",") if field.strip()] if raw else None


class StreamViewSet(OperatorViewSet):
    """Streams in the reference product's export format."""

    queryset = Stream.objects.select_related("solution")
    pagination_class = None  # a cursor for the list; skip/limit for versions
    # `page`, not `list`: drf-spectacular would document a list action's answer as an
    # array, and this one is {"streams": [...], "nextCursor": …}.
    required_scopes = {
        "page": READ,
        "retrieve": READ,
        "export": READ,
        "versions": READ,
        "import_stream": WRITE,
        "partial_update": WRITE,
        "executions": READ,
        "execute": WRITE,
        "logs": READ,
        "preview": WRITE,
    }
    rate_limit_group = "streams"
    max_body_bytes = MAX_IMPORT_BYTES
    extra_error_statuses = ["409"]

    @extend_schema(
        operation_id="streams_list",
        parameters=[
            OpenApiParameter("cursor", str, description="nextCursor of the previous page."),
            OpenApiParameter("limit", int, description=f"At most {MAX_LIMIT}."),
            OpenApiParameter("solutionId", str),
            OpenApiParameter("name", str, description="The exact, case-sensitive name."),
            RESOURCE_REFS,
            FIELDS,
        ],
        responses={200: schema.STREAM_LIST},
    )
    def page(self, request: Request) -> Response:
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        streams = self.get_queryset()
        if request.query_params.get("solutionId"):
            streams = streams.filter(solution_id=_uuid(request.query_params["solutionId"]))
        if request.query_params.get("name"):
            streams = streams.filter(name=request.query_params["name"])
        refs = _resource_refs(request)
        if refs:
            streams = selectors.streams_referencing(streams, refs)
        try:
            streams = selectors.streams_after(streams, request.query_params.get("cursor"))
        except selectors.BadCursor as exc:
            raise exceptions.ValidationError({"cursor": [str(exc)]}) from None
        page = list(streams[: limit + 1])
        more, page = len(page) > limit, page[:limit]
        fields = _fields(request)
        documents = selectors.streams_documents(page)
        if fields:
            documents = [selectors.project(document, fields) for document in documents]
        next_cursor = selectors.cursor_encode(page[-1]) if more and page else None
        return Response({"streams": documents, "nextCursor": next_cursor})

    @extend_schema(
        operation_id="streams_get", parameters=[FIELDS, TAG], responses={200: schema.STREAM}
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        stream = self.get_object()
        document = selectors.stream_document(stream, self._version(stream))
        fields = _fields(request)
        return Response(selectors.project(document, fields) if fields else document)

    @extend_schema(
        operation_id="streams_update",
        request=StreamUpdateSerializer,
        responses={200: schema.STREAM},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        """Tally's extension: enable or disable, processing type, description, schedule."""
        stream = self.get_object()
        serializer = StreamUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.stream_update(stream=stream, actor=_actor(request), **serializer.validated_data)
        return Response(selectors.stream_document(stream, selectors.stream_version(stream)))

    @extend_schema(operation_id="streams_export", parameters=[TAG], responses={200: schema.EXPORT})
    @action(detail=True, methods=["get"])
    def export(self, request: Request, pk: str) -> Response:
        """The stream's configuration in the export format, ready to import elsewhere."""
        stream = self.get_object()
        return Response(selectors.stream_config_with_keys(stream, self._version(stream)))

    @extend_schema(
        operation_id="streams_versions",
        parameters=[
            OpenApiParameter("skip", int),
            OpenApiParameter("limit", int, description=f"At most {MAX_LIMIT}."),
            RESOURCE_REFS,
        ],
        responses={200: schema.VERSIONS},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, pk: str) -> Response:
        """The stream's tagged versions, newest first."""
        stream = self.get_object()
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        skip = query_int(request, "skip", 0)
        tagged = stream.versions.filter(is_latest=False).order_by("-created_at", "-id")
        refs = _resource_refs(request)
        if refs:
            tagged = selectors.versions_referencing(stream, tagged, refs)
        return Response(
            {
                "total": tagged.count(),
                "versions": [
                    {
                        "tag": version.tag,
                        "schemaVersion": version.schema_version,
                        "createdAt": version.created_at,
                        "createdBy": version.created_by,
                    }
                    for version in tagged[skip : skip + limit]
                ],
            }
        )

    @extend_schema(
        operation_id="streams_import",
        request=StreamImportSerializer,
        responses={200: schema.IMPORT_RESULT, 201: schema.IMPORT_RESULT},
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_stream(self, request: Request) -> Response:
        """Import a stream configuration (create, overwrite, copy or skip by name)."""
        serializer = StreamImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        solution = Solution.objects.filter(
            operator=request.user.operator, pk=data["solution_id"]
        ).first()
        if solution is None:
            raise Http404("No such solution.")
        try:
            result = services.stream_import(
                operator=request.user.operator,
                solution=solution,
                config=data["stream_config"],
                on_name_conflict=data.get("on_name_conflict", "overwrite"),
                allow_node_deletion=data.get("allow_node_deletion", False),
                actor=_actor(request),
            )
        except services.StreamConfigInvalid as exc:
            raise exceptions.ValidationError(
                {where: [message] for where, message in exc.problems}
            ) from None
        stream = result.stream
        document = selectors.stream_document(stream, selectors.stream_version(stream))
        status = 201 if result.action in ("created", "created-new") else 200
        return Response(
            {"importAction": result.action, "stream": document, "tag": result.tag},
            status=status,
        )

    @extend_schema(
        operation_id="streams_executions",
        parameters=[OpenApiParameter("limit", int, description=f"At most {MAX_LIMIT}.")],
        responses={200: schema.EXECUTIONS},
    )
    @action(detail=True, methods=["get"])
    def executions(self, request: Request, pk: str) -> Response:
        """Tally's extension: the stream's batch executions, newest first."""
        stream = self.get_object()
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        found = StreamExecution.objects.filter(
            operator_id=stream.operator_id, stream=stream
        ).order_by("-created_at", "-id")[:limit]
        return Response({"executions": [selectors.execution_document(e) for e in found]})

    @extend_schema(operation_id="streams_execute", request=None, responses={202: schema.EXECUTION})
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, pk: str) -> Response:
        """Tally's extension: run a batch stream now. Answers 202 with the execution
        (QUEUED; then RUNNING, SUCCEEDED or FAILED); a realtime stream, or one with a
        node that cannot run, is a 409."""
        stream = self.get_object()
        execution = services.execution_create(stream=stream, trigger=StreamExecution.Trigger.API)
        return Response(selectors.execution_document(execution), status=202)

    @extend_schema(
        operation_id="streams_logs",
        parameters=[
            OpenApiParameter("before", int, description="nextCursor of the previous page."),
            OpenApiParameter("limit", int, description=f"At most {MAX_LIMIT}."),
        ],
        responses={200: schema.LOGS},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: str) -> Response:
        """Tally's extension: the stream's log (writers/log records and script log
        lines), newest first; the newest lines are kept (TALLY_STREAM_LOG_MAX_LINES)."""
        stream = self.get_object()
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        before = query_int(request, "before", 0) or None
        lines, cursor = selectors.log_page(stream, before=before, limit=limit)
        return Response({"logs": lines, "nextCursor": cursor})

    @extend_schema(
        operation_id="streams_preview",
        request=StreamPreviewSerializer,
        responses={200: schema.PREVIEW},
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, pk: str) -> Response:
        """Tally's extension: run the stream over some records with no side effects."""
        stream = self.get_object()
        serializer = StreamPreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.stream_preview(
            stream=stream, records=data.get("records"), last_records=data.get("last_records")
        )
        return Response(result)

    def _version(self, stream: Stream):
        try:
            return selectors.stream_version(stream, self.request.query_params.get("tag"))
        except selectors.VersionNotFound as exc:
            raise Http404(str(exc)) from None


def _resource_refs(request: Request) -> list:
    try:
        return selectors.resource_refs_parse(request.query_params.getlist("resourceRefs"))
    except selectors.BadResourceRef as exc:
        raise exceptions.ValidationError({"resourceRefs": [str(exc)]}) from None


def _uuid(value: str, name: str = "solutionId"):
    found = uuid_or_none(value)
    if found is None:
        raise exceptions.ValidationError({name: ["Must be a UUID."]})
    return found


def _actor(request: Request) -> dict[str, str]:
    """Who saved: the application behind the token."""
    client = request.user
    return {"type": "application", "id": client.client_id, "name": client.access.application.name}


class SolutionViewSet(mixins.ListModelMixin, OperatorViewSet):
    """Solutions: named groups of streams. Every operator has a default one."""

    queryset = Solution.objects.all()
    serializer_class = SolutionSerializer
    list_key = "solutions"
    sort_fields = {"name": "name", "createdAt": "created_at"}
    default_sort = "createdAt"
    required_scopes = {"list": READ}
    rate_limit_group = "streams"

    def list(self, request: Request) -> Response:
        services.solution_default(operator=request.user.operator)
        return super().list(request)


class FunctionViewSet(OperatorViewSet):
    """The functions a stream's nodes may use, with the JSON Schema of their params."""

    required_scopes = {"catalogue": READ}
    rate_limit_group = "streams"
    pagination_class = None

    @extend_schema(operation_id="functions_list", responses={200: schema.FUNCTIONS})
    def catalogue(self, request: Request) -> Response:
        return Response({"functions": catalogue_json()})


class AggregationStoreViewSet(OperatorViewSet):
    """Aggregation stores: where each aggregator node keeps its sessions (the store's id
    is the node's `storeId`), and the lookup of one session by its group values."""

    queryset = AggregationStore.objects.all()
    pagination_class = None  # a cursor, as the streams list
    # `page`, not `list`: see StreamViewSet.
    required_scopes = {"page": SESSIONS, "session_lookup": SESSIONS}
    rate_limit_group = "aggregation"

    @extend_schema(
        operation_id="aggregation_stores_list",
        parameters=[
            OpenApiParameter("cursor", str, description="nextCursor of the previous page."),
            OpenApiParameter("limit", int, description=f"At most {MAX_LIMIT}."),
            OpenApiParameter("streamId", str, description="Only this stream's stores."),
        ],
        responses={200: schema.STORE_LIST},
    )
    def page(self, request: Request) -> Response:
        """Tally's extension: the operator's aggregation stores, oldest first, with
        their node and the fields their sessions are grouped by."""
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        stream_id = None
        if request.query_params.get("streamId"):
            stream_id = _uuid(request.query_params["streamId"], "streamId")
        stores = selectors.stores_list(operator=request.user.operator, stream_id=stream_id)
        try:
            stores = selectors.stores_after(stores, request.query_params.get("cursor"))
        except selectors.BadCursor as exc:
            raise exceptions.ValidationError({"cursor": [str(exc)]}) from None
        page = list(stores[: limit + 1])
        more, page = len(page) > limit, page[:limit]
        next_cursor = selectors.cursor_encode(page[-1]) if more and page else None
        return Response({"stores": selectors.stores_documents(page), "nextCursor": next_cursor})

    @extend_schema(
        operation_id="aggregation_sessions_lookup",
        parameters=[
            OpenApiParameter(
                "fieldValues",
                str,
                many=True,
                required=True,
                description="The session's group values, in the order of the store's "
                "group fields (repeat the parameter: fieldValues=customer123&"
                "fieldValues=order456). A data aggregator's period field takes its period "
                "as the aggregator writes it (2024-09 for a month).",
            ),
        ],
        responses={200: schema.SESSION},
    )
    def session_lookup(self, request: Request, pk: str) -> Response:
        """Find a session by the key its group values make, as the aggregator computes
        it. A script aggregator with several group-by rules: the values must be as many
        as the fields of one rule."""
        store = self.get_object()
        values = request.query_params.getlist("fieldValues")
        if not values:
            raise exceptions.ValidationError(
                {"fieldValues": ["Send the session's group values as fieldValues."]}
            )
        if any("\x00" in value for value in values):
            raise exceptions.ValidationError({"fieldValues": ["A value contains a NUL character."]})
        try:
            session = selectors.session_lookup(store=store, values=values)
        except selectors.StoreNodeGone as exc:
            raise exceptions.NotFound(str(exc)) from None
        except selectors.FieldValuesMismatch as exc:
            raise exceptions.ValidationError({"fieldValues": [str(exc)]}) from None
        if session is None:
            raise exceptions.NotFound("No session of this store has these group values.")
        return Response(selectors.session_document(session))
