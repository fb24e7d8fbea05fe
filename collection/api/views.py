"""Online collection: /online-collection/v1/collectors[/{id}[/data|/stats]]."""

from __future__ import annotations

import uuid

from django.db import InterfaceError, OperationalError
from django.http import Http404
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collection import selectors, services
from collection.api.serializers import (
    CollectorCreateSerializer,
    CollectorSerializer,
    CollectorStatsSerializer,
    CollectorUpdateSerializer,
    DeletedCountSerializer,
    IngestionBodySerializer,
    IngestionResultSerializer,
)
from collection.filtersets import CollectorFilterSet
from collection.models import Collector
from collection.parsing import NDJSON, BodyError, TooManyRecords, parse_body, prepare_records
from collection.rules import IDEMPOTENCY_KEY_MAX_LENGTH, MAX_BATCH_RECORDS, MAX_BODY_BYTES
from common.api.exceptions import Conflict, PayloadTooLarge, ServiceUnavailable, Unprocessable
from common.api.filters import SortFilterBackend
from common.api.limits import too_large_response
from tenants.api.base import caller_operator

COLLECTOR_ID = OpenApiParameter(
    "collector_id", str, OpenApiParameter.PATH, description="The collector's id."
)


class OperatorCollectorsMixin:
    """Every view sees only the caller's live collectors; any other id is a 404."""

    def get_queryset(self):
        return Collector.objects.live().filter(operator=caller_operator(self))

    def get_object(self) -> Collector:
        try:
            collector_id = uuid.UUID(self.kwargs["collector_id"])
        except ValueError:
            raise Http404 from None
        collector = self.get_queryset().filter(pk=collector_id).first()
        if collector is None:
            raise Http404
        return collector


class CollectorListView(OperatorCollectorsMixin, GenericAPIView):
    """Create and list collectors."""

    serializer_class = CollectorSerializer
    filterset_class = CollectorFilterSet
    filter_backends = [DjangoFilterBackend, SortFilterBackend]
    sort_fields = {
        "name": "name",
        "status": "status",
        "createdAt": "created_at",
        "updatedAt": "updated_at",
    }
    default_sort = "name"
    list_key = "collectors"
    required_scopes = {
        "get": "online-collection:read:collectors",
        "post": "online-collection:create:collectors",
    }
    rate_limit_group = {"get": "collectors-read", "post": "collectors-write"}

    @extend_schema(operation_id="collectors_list", responses=CollectorSerializer(many=True))
    def get(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="collectors_create",
        request=CollectorCreateSerializer,
        responses={201: CollectorSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = CollectorCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            collector = services.collector_create(
                operator=request.user.operator, name=serializer.validated_data["name"]
            )
        except services.CollectorConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(CollectorSerializer(collector).data, status=status.HTTP_201_CREATED)


class CollectorDetailView(OperatorCollectorsMixin, GenericAPIView):
    """Read, rename or delete one collector."""

    serializer_class = CollectorSerializer
    required_scopes = {
        "get": "online-collection:read:collectors",
        "patch": "online-collection:update:collectors",
        "delete": "online-collection:delete:collectors",
    }
    rate_limit_group = {"get": "collectors-read", "default": "collectors-write"}

    @extend_schema(operation_id="collectors_get", parameters=[COLLECTOR_ID])
    def get(self, request: Request, collector_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="collectors_update",
        parameters=[COLLECTOR_ID],
        request=CollectorUpdateSerializer,
        responses={200: CollectorSerializer},
    )
    def patch(self, request: Request, collector_id: str) -> Response:
        collector = self.get_object()
        serializer = CollectorUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "name" not in serializer.validated_data:
            raise exceptions.ValidationError({"name": ["Send the new name."]})
        try:
            services.collector_rename(collector=collector, name=serializer.validated_data["name"])
        except services.CollectorConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(CollectorSerializer(collector).data)

    @extend_schema(
        operation_id="collectors_delete",
        parameters=[COLLECTOR_ID],
        request=None,
        responses={200: DeletedCountSerializer},
    )
    def delete(self, request: Request, collector_id: str) -> Response:
        deleted = services.collector_delete(collector=self.get_object())
        return Response({"deletedCount": deleted})


class CollectorStatsView(OperatorCollectorsMixin, GenericAPIView):
    """Records of one collector by status, and how long the oldest unprocessed waits."""

    serializer_class = CollectorStatsSerializer
    required_scopes = {"get": "online-collection:read:collectors"}
    rate_limit_group = "collectors-read"

    @extend_schema(operation_id="collectors_stats", parameters=[COLLECTOR_ID])
    def get(self, request: Request, collector_id: str) -> Response:
        return Response(selectors.collector_stats(collector=self.get_object()))


class IngestionView(OperatorCollectorsMixin, APIView):
    """Store usage records: durably, before answering 202; duplicates are not stored.

    Bodies are read here with msgspec and checked in bulk rather than by DRF
    serializers, which cannot keep up with batches of thousands of records.
    """

    required_scopes = {"post": "online-collection:ingest:collectors"}
    rate_limit_group = "ingestion"
    extra_error_statuses = ["422", "503"]
    max_body_bytes = MAX_BODY_BYTES
    parser_classes: list = []

    def handle_exception(self, exc):
        if isinstance(exc, OperationalError | InterfaceError):
            exc = ServiceUnavailable()
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="collectors_ingest",
        parameters=[
            COLLECTOR_ID,
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Makes the request safe to retry: the same key and body answer "
                "the first answer again; another body is a 422; while the first request "
                "runs, a 409.",
            ),
        ],
        request={"application/json": IngestionBodySerializer, NDJSON: {"type": "string"}},
        responses={202: IngestionResultSerializer},
    )
    def post(self, request: Request, collector_id: str) -> Response:
        collector = self.get_object()
        response = None
        try:
            response = self._ingest(request, collector)
            return response
        finally:
            # A stored batch was counted with its records; every other outcome here.
            if not getattr(response, "counted", False):
                services.ingestion_count_refused_request(collector=collector)

    def _ingest(self, request: Request, collector: Collector) -> Response:
        if collector.status != Collector.Status.ACTIVE:
            raise Conflict("The collector is still being created; try again shortly.")
        content_type = request._request.content_type or "application/json"
        if content_type not in ("application/json", NDJSON):
            raise exceptions.UnsupportedMediaType(content_type)
        body = request._request.body
        if len(body) > MAX_BODY_BYTES:
            return too_large_response(MAX_BODY_BYTES)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            raise exceptions.ValidationError(
                {"Idempotency-Key": [f"Must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
            )
        try:
            records = parse_body(body, content_type)
        except TooManyRecords:
            raise PayloadTooLarge(
                f"A batch may hold at most {MAX_BATCH_RECORDS} records."
            ) from None
        except BodyError as exc:
            raise exceptions.ValidationError({exc.field or "body": [exc.message]}) from None

        key_id = None
        if key is not None:
            state = services.idempotency_begin(
                collector=collector, key=key, digest=services.body_digest(body, content_type)
            )
            if state.response is not None:
                return Response(state.response, status=status.HTTP_202_ACCEPTED)
            if state.conflict == "mismatch":
                raise Unprocessable(
                    "This Idempotency-Key was used with another body; use a new key."
                )
            if state.conflict == "in_flight":
                raise Conflict("A request with this Idempotency-Key is still in progress.")
            key_id = state.key_id

        now = timezone.now()
        batch = prepare_records(records, now)
        try:
            result = services.ingest(
                collector=collector,
                batch=batch,
                record_count=len(records),
                size_bytes=len(body),
                now=now,
                idempotency_key_id=key_id,
            )
        except Exception:
            if key_id is not None:
                services.idempotency_release(key_id=key_id)
            raise
        response = Response(result.as_response(), status=status.HTTP_202_ACCEPTED)
        response.counted = True
        return response
