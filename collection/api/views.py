"""Online collection: /online-collection/v1/collectors[/{id}[/data|/stats]]."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from collection import selectors
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
from collection.parsing import NDJSON, BodyError
from collection.rules import MAX_BODY_BYTES
from collection.selectors import live_collectors
from collection.services.collectors import collector_create, collector_delete, collector_rename
from collection.services.ingestion import (
    BodyTooLarge,
    CollectorGone,
    IdempotencyKeyInvalid,
    IdempotencyMismatch,
    UnsupportedContentType,
    ingestion_receive,
)
from common.api.exceptions import PayloadTooLarge, Unprocessable
from tenants.api.base import OperatorViewSet, caller_operator

COLLECTOR_ID = OpenApiParameter(
    "collector_id", str, OpenApiParameter.PATH, description="The collector's id."
)


class CollectorViewSet(mixins.ListModelMixin, OperatorViewSet):
    """Collectors: the caller's live ones only (a deleted collector is a 404)."""

    queryset = Collector.objects.live()
    serializer_class = CollectorSerializer
    lookup_url_kwarg = "collector_id"
    filterset_class = CollectorFilterSet
    sort_fields = {
        "name": "name",
        "status": "status",
        "createdAt": "created_at",
        "updatedAt": "updated_at",
    }
    default_sort = "name"
    list_key = "collectors"
    required_scopes = {
        "list": "online-collection:read:collectors",
        "create": "online-collection:create:collectors",
        "retrieve": "online-collection:read:collectors",
        "stats": "online-collection:read:collectors",
        "partial_update": "online-collection:update:collectors",
        "destroy": "online-collection:delete:collectors",
    }
    rate_limit_group = {
        "list": "collectors-read",
        "retrieve": "collectors-read",
        "stats": "collectors-read",
        "default": "collectors-write",
    }

    @extend_schema(operation_id="collectors_list", responses=CollectorSerializer(many=True))
    def list(self, request: Request) -> Response:
        return super().list(request)

    @extend_schema(
        operation_id="collectors_create",
        request=CollectorCreateSerializer,
        responses={201: CollectorSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = CollectorCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        collector = collector_create(
            operator=request.user.operator, name=serializer.validated_data["name"]
        )
        return Response(CollectorSerializer(collector).data, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="collectors_get", parameters=[COLLECTOR_ID])
    def retrieve(self, request: Request, collector_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="collectors_update",
        parameters=[COLLECTOR_ID],
        request=CollectorUpdateSerializer,
        responses={200: CollectorSerializer},
    )
    def partial_update(self, request: Request, collector_id: str) -> Response:
        collector = self.get_object()
        serializer = CollectorUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "name" not in serializer.validated_data:
            raise exceptions.ValidationError({"name": ["Send the new name."]})
        collector_rename(collector=collector, name=serializer.validated_data["name"])
        return Response(CollectorSerializer(collector).data)

    @extend_schema(
        operation_id="collectors_delete",
        parameters=[COLLECTOR_ID],
        request=None,
        responses={200: DeletedCountSerializer},
    )
    def destroy(self, request: Request, collector_id: str) -> Response:
        return Response({"deletedCount": collector_delete(collector=self.get_object())})

    @extend_schema(
        operation_id="collectors_stats",
        parameters=[COLLECTOR_ID],
        responses={200: CollectorStatsSerializer},
    )
    def stats(self, request: Request, collector_id: str) -> Response:
        """Records of one collector by status, and how long the oldest unprocessed waits."""
        return Response(selectors.collector_stats(collector=self.get_object()))


class IngestionViewSet(OperatorViewSet):
    """Store usage records: durably, before answering 202; duplicates are not stored.

    The body is read by the ingestion service (msgspec, checked in bulk) rather than by
    DRF's parsers and serializers, which cannot keep up with batches of thousands.
    """

    queryset = Collector.objects.live()
    lookup_url_kwarg = "collector_id"
    required_scopes = {"create": "online-collection:ingest:collectors"}
    rate_limit_group = "ingestion"
    extra_error_statuses = ["422", "503"]
    max_body_bytes = MAX_BODY_BYTES
    parser_classes: list = []

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
    def create(self, request: Request, collector_id: str) -> Response:
        collector, cached = self._collector()
        try:
            answer = ingestion_receive(
                collector=collector,
                body=request._request.body,
                content_type=request._request.content_type or "application/json",
                idempotency_key=request.headers.get("Idempotency-Key"),
                collector_cached=cached,
            )
        except CollectorGone:
            live_collectors.evict(collector)
            raise Http404 from None
        except UnsupportedContentType as exc:
            raise exceptions.UnsupportedMediaType(str(exc)) from None
        except IdempotencyKeyInvalid as exc:
            raise exceptions.ValidationError({"Idempotency-Key": [str(exc)]}) from None
        except BodyTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except BodyError as exc:
            raise exceptions.ValidationError({exc.field or "body": [exc.message]}) from None
        except IdempotencyMismatch as exc:
            raise Unprocessable(str(exc)) from None
        return Response(answer.body, status=status.HTTP_202_ACCEPTED)

    def _collector(self) -> tuple[Collector, bool]:
        """The caller's live collector, and whether it came from the process cache (which
        saves a query on every request of a busy collector)."""
        cached = live_collectors.get(caller_operator(self).pk, self.lookup_uuid())
        if cached is not None:
            return cached, True
        collector = self.get_object()
        live_collectors.put(collector)
        return collector, False
