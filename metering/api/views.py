"""Meter types and meters: /usage-metering/v1/meter-types and /usage-metering/v1/meters."""

from __future__ import annotations

from django.db.models import Count
from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from metering import services
from metering.api.serializers import (
    MeterCreateSerializer,
    MeterPeriodSerializer,
    MeterSerializer,
    MeterTypeSerializer,
    MeterUpdateSerializer,
)
from metering.filtersets import MeterFilterSet, MeterTypeFilterSet
from metering.models import Meter, MeterPeriod, MeterType
from tenants.api.base import OperatorViewSet

DELETED = inline_serializer("Deleted", {"deletedCount": serializers.IntegerField()})


class MeterTypeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OperatorViewSet):
    """Meter types: what is measured, how it aggregates and when it resets."""

    queryset = MeterType.objects.all()
    serializer_class = MeterTypeSerializer
    filterset_class = MeterTypeFilterSet
    sort_fields = {
        "name": "name",
        "category": "category",
        "unit": "unit",
        "createdAt": "created_at",
        "updatedAt": "updated_at",
    }
    default_sort = "createdAt"
    list_key = "meterTypes"
    rate_limit_group = "meter-types"
    required_scopes = {
        "list": "usage-metering:read:meter_types",
        "retrieve": "usage-metering:read:meter_types",
        "create": "usage-metering:create:meter_types",
        "partial_update": "usage-metering:update:meter_types",
        "destroy": "usage-metering:delete:meter_types",
    }

    def get_queryset(self):
        return super().get_queryset().annotate(number_of_meters=Count("meters"))

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        meter_type = services.meter_type_create(
            operator=request.user.operator, **serializer.validated_data
        )
        return Response(self.get_serializer(self._reload(meter_type)).data, status=201)

    def partial_update(self, request: Request, pk: str) -> Response:
        meter_type = self.get_object()
        serializer = self.get_serializer(meter_type, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.meter_type_update(meter_type=meter_type, **serializer.validated_data)
        return Response(self.get_serializer(self._reload(meter_type)).data)

    @extend_schema(responses={200: DELETED})
    def destroy(self, request: Request, pk: str) -> Response:
        services.meter_type_delete(meter_type=self.get_object())
        return Response({"deletedCount": 1})

    def _reload(self, meter_type: MeterType) -> MeterType:
        return self.get_queryset().get(pk=meter_type.pk)


class MeterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OperatorViewSet):
    """Meters: one customer's counter for one meter type and meter key."""

    queryset = Meter.objects.select_related("meter_type")
    serializer_class = MeterSerializer
    filterset_class = MeterFilterSet
    sort_fields = {"createdAt": "created_at", "updatedAt": "updated_at", "value": "value"}
    default_sort = "createdAt"
    list_key = "meters"
    rate_limit_group = "meters"
    required_scopes = {
        "list": "usage-metering:read:meters",
        "retrieve": "usage-metering:read:meters",
        "periods": "usage-metering:read:meters",
        "create": "usage-metering:create:meters",
        "partial_update": "usage-metering:update:meters",
        "destroy": "usage-metering:delete:meters",
    }

    def get_list_key(self) -> str:
        return "periods" if self.action == "periods" else self.list_key

    @extend_schema(request=MeterCreateSerializer, responses={201: MeterSerializer})
    def create(self, request: Request) -> Response:
        serializer = MeterCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        meter = services.meter_create(
            operator=request.user.operator,
            meter_type=self._meter_type(data),
            meter_key=data["meter_key"],
            user_id=data["user_id"],
            custom_fields=data.get("custom_fields"),
        )
        return Response(self.get_serializer(meter).data, status=201)

    @extend_schema(request=MeterUpdateSerializer, responses={200: MeterSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        meter = self.get_object()
        serializer = MeterUpdateSerializer(meter, data=request.data)
        serializer.is_valid(raise_exception=True)
        services.meter_update(meter=meter, **serializer.validated_data)
        return Response(self.get_serializer(meter).data)

    @extend_schema(responses={200: DELETED})
    def destroy(self, request: Request, pk: str) -> Response:
        services.meter_delete(meter=self.get_object())
        return Response({"deletedCount": 1})

    @extend_schema(responses={200: MeterPeriodSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], filter_backends=[])
    def periods(self, request: Request, pk: str) -> Response:
        """Closed periods of the meter, newest first."""
        meter = self.get_object()
        periods = MeterPeriod.objects.filter(meter=meter).order_by("-period_start")
        page = self.paginate_queryset(periods)
        return self.get_paginated_response(MeterPeriodSerializer(page, many=True).data)

    def _meter_type(self, data: dict) -> MeterType:
        # Only the caller's own meter types: another operator's id is simply not found.
        types = MeterType.objects.filter(operator=self.request.user.operator)
        if "meter_type_id" in data:
            meter_type = types.filter(pk=data["meter_type_id"]).first()
        else:
            meter_type = types.filter(external_ref=data["meter_type_external_ref"]).first()
        if meter_type is None:
            raise Http404("No such meter type.")
        return meter_type
