"""Meter types and meters (/usage-metering/v1/…) and pricing (/billing/v1/…: accounts,
price plans, plan assignments, exchange rates)."""

from __future__ import annotations

from django.db.models import Count, Prefetch
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from metering import selectors, services
from metering.api.serializers import (
    BillingAccountSerializer,
    ExchangeRateKeySerializer,
    ExchangeRateSerializer,
    ExchangeRateSetSerializer,
    MeterCreateSerializer,
    MeterPeriodSerializer,
    MeterSerializer,
    MeterTypeSerializer,
    MeterUpdateSerializer,
    PlanAssignmentCreateSerializer,
    PlanAssignmentSerializer,
    PricePlanSerializer,
)
from metering.filtersets import (
    BillingAccountFilterSet,
    ExchangeRateFilterSet,
    MeterFilterSet,
    MeterTypeFilterSet,
    PlanAssignmentFilterSet,
)
from metering.models import (
    BillingAccount,
    ExchangeRate,
    Meter,
    MeterPeriod,
    MeterType,
    PlanAssignment,
    PlanRate,
    PricePlan,
)
from tenants.api.base import OperatorViewSet, caller_operator

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


# -- Billing ------------------------------------------------------------------------------

BILLING_SCOPES = {
    "list": "metrics:read",
    "retrieve": "metrics:read",
    "create": "metrics:write",
    "update": "metrics:write",
    "partial_update": "metrics:write",
    "destroy": "metrics:write",
}


class BillingAccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OperatorViewSet):
    """Billing accounts: what a customer is invoiced through, by the operator's own
    `accountId`, in its invoice currency. The customer is created on first use."""

    queryset = BillingAccount.objects.select_related("customer")
    serializer_class = BillingAccountSerializer
    filterset_class = BillingAccountFilterSet
    lookup_field = "account_id"
    lookup_url_kwarg = "accountId"
    lookup_value_regex = "[^/]+"
    sort_fields = {"createdAt": "created_at", "accountId": "account_id", "name": "name"}
    default_sort = "createdAt"
    list_key = "accounts"
    rate_limit_group = "metrics"
    required_scopes = BILLING_SCOPES

    @extend_schema(responses={201: BillingAccountSerializer})
    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = services.billing_account_create(
            operator=request.user.operator,
            account_id=data["account_id"],
            customer_id=data["customer"]["external_id"],
            name=data.get("name", ""),
            invoice_currency=data["invoice_currency"],
        )
        return Response(self.get_serializer(account).data, status=201)

    @extend_schema(parameters=[OpenApiParameter("accountId", OpenApiTypes.STR, "path")])
    def retrieve(self, request: Request, accountId: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(parameters=[OpenApiParameter("accountId", OpenApiTypes.STR, "path")])
    def partial_update(self, request: Request, accountId: str) -> Response:
        account = self.get_object()
        serializer = self.get_serializer(account, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.billing_account_update(account=account, **serializer.validated_data)
        return Response(self.get_serializer(account).data)

    @extend_schema(
        parameters=[OpenApiParameter("accountId", OpenApiTypes.STR, "path")],
        responses={200: DELETED},
    )
    def destroy(self, request: Request, accountId: str) -> Response:
        services.billing_account_delete(account=self.get_object())
        return Response({"deletedCount": 1})


class PricePlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OperatorViewSet):
    """Price plans: per-unit or graduated prices of meter types, in the operator's base
    currency. PUT replaces a plan with its rates; a plan in use cannot be deleted."""

    queryset = PricePlan.objects.select_related("operator").prefetch_related(
        Prefetch("rates", queryset=PlanRate.objects.order_by("pk"))
    )
    serializer_class = PricePlanSerializer
    sort_fields = {"createdAt": "created_at", "name": "name"}
    default_sort = "createdAt"
    list_key = "pricePlans"
    rate_limit_group = "metrics"
    required_scopes = BILLING_SCOPES

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "operator": caller_operator(self)}

    @extend_schema(responses={201: PricePlanSerializer})
    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        plan = services.price_plan_create(
            operator=request.user.operator, **serializer.validated_data
        )
        return Response(self.get_serializer(self._reload(plan)).data, status=201)

    def update(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.price_plan_replace(plan=plan, **serializer.validated_data)
        return Response(self.get_serializer(self._reload(plan)).data)

    @extend_schema(responses={200: DELETED})
    def destroy(self, request: Request, pk: str) -> Response:
        services.price_plan_delete(plan=self.get_object())
        return Response({"deletedCount": 1})

    def _reload(self, plan: PricePlan) -> PricePlan:
        return self.get_queryset().get(pk=plan.pk)


class PlanAssignmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OperatorViewSet):
    """Plan assignments: an account on a plan from a day, invoiced in cycles (`cycle`,
    `anchorDay`: 1-7 = Monday-Sunday for WEEKLY, the day of the month otherwise). A
    later assignment closes the running cycle on its day; `firstCycle` shows that."""

    queryset = PlanAssignment.objects.select_related("account", "plan")
    serializer_class = PlanAssignmentSerializer
    filterset_class = PlanAssignmentFilterSet
    sort_fields = {"effectiveFrom": "effective_from", "createdAt": "created_at"}
    default_sort = "effectiveFrom"
    list_key = "planAssignments"
    rate_limit_group = "metrics"
    required_scopes = BILLING_SCOPES

    def get_serializer(self, *args, **kwargs):
        # Every answer shows each assignment's first cycle, worked out for the whole page
        # at once (metering.selectors), so a list costs the same queries at any length.
        if args and "first_cycles" not in kwargs.get("context", {}):
            rows = args[0] if kwargs.get("many") else [args[0]]
            context = {**self.get_serializer_context(), **kwargs.pop("context", {})}
            context["first_cycles"] = selectors.assignment_first_cycles(rows)
            kwargs["context"] = context
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        request=PlanAssignmentCreateSerializer, responses={201: PlanAssignmentSerializer}
    )
    def create(self, request: Request) -> Response:
        serializer = PlanAssignmentCreateSerializer(
            data=request.data, context={"operator": request.user.operator}
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        assignment = services.plan_assignment_create(
            operator=request.user.operator,
            account=data["account_id"],
            plan=data["price_plan_id"],
            effective_from=data["effective_from"],
            cycle=data["cycle"],
            anchor_day=data["anchor_day"],
        )
        return Response(self.get_serializer(assignment).data, status=201)

    @extend_schema(responses={200: DELETED})
    def destroy(self, request: Request, pk: str) -> Response:
        services.plan_assignment_delete(assignment=self.get_object())
        return Response({"deletedCount": 1})


EXCHANGE_RATE_PATH = [
    OpenApiParameter("currency", OpenApiTypes.STR, "path", description="ISO 4217, e.g. EUR"),
    OpenApiParameter("date", OpenApiTypes.DATE, "path", description="YYYY-MM-DD"),
]


class ExchangeRateViewSet(mixins.ListModelMixin, OperatorViewSet):
    """Exchange rates: how many units of a currency one unit of the operator's base
    currency buys, from a day on. PUT sets a day's rate (insert or replace)."""

    queryset = ExchangeRate.objects.all()
    serializer_class = ExchangeRateSerializer
    filterset_class = ExchangeRateFilterSet
    list_key = "exchangeRates"
    rate_limit_group = "metrics"
    required_scopes = BILLING_SCOPES

    def get_object(self) -> ExchangeRate:
        key = ExchangeRateKeySerializer(data=self.kwargs)
        key.is_valid(raise_exception=True)
        found = self.get_queryset().filter(**key.validated_data).first()
        if found is None:
            raise Http404("No rate for this currency and day.")
        return found

    @extend_schema(parameters=EXCHANGE_RATE_PATH)
    def retrieve(self, request: Request, currency: str, date: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        parameters=EXCHANGE_RATE_PATH,
        request=ExchangeRateSetSerializer,
        responses={200: ExchangeRateSerializer, 201: ExchangeRateSerializer},
    )
    def update(self, request: Request, currency: str, date: str) -> Response:
        key = ExchangeRateKeySerializer(data=self.kwargs)
        key.is_valid(raise_exception=True)
        body = ExchangeRateSetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        exchange_rate, created = services.exchange_rate_set(
            operator=request.user.operator, **key.validated_data, **body.validated_data
        )
        return Response(self.get_serializer(exchange_rate).data, status=201 if created else 200)

    @extend_schema(parameters=EXCHANGE_RATE_PATH, responses={200: DELETED})
    def destroy(self, request: Request, currency: str, date: str) -> Response:
        services.exchange_rate_delete(exchange_rate=self.get_object())
        return Response({"deletedCount": 1})
