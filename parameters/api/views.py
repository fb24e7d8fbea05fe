"""Global parameters: /global-parameters/v1/parameters[/{name}] (names may contain `/`)."""

from __future__ import annotations

from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.exceptions import Conflict
from common.api.filters import SortFilterBackend
from parameters.api.serializers import (
    ParameterCreateSerializer,
    ParameterDeleteResultSerializer,
    ParameterDeleteSerializer,
    ParameterNameSerializer,
    ParameterSerializer,
    ParameterUpdateSerializer,
)
from parameters.filtersets import ParameterFilterSet
from parameters.models import Parameter
from parameters.services import (
    ParameterConflict,
    parameter_create,
    parameter_update,
    parameters_delete,
)
from tenants.api.base import caller_operator


class OperatorParametersMixin:
    def get_queryset(self):
        return Parameter.objects.filter(operator=caller_operator(self))


class ParameterListView(OperatorParametersMixin, GenericAPIView):
    """Create, list and bulk-delete parameters."""

    serializer_class = ParameterSerializer
    filterset_class = ParameterFilterSet
    filter_backends = [DjangoFilterBackend, SortFilterBackend]
    sort_fields = {"name": "name", "description": "description", "updatedAt": "updated_at"}
    default_sort = "name"
    list_key = "parameters"
    required_scopes = {
        "get": "global-parameters:read:parameters",
        "post": "global-parameters:create:parameters",
        "delete": "global-parameters:delete:parameters",
    }
    rate_limit_group = {"delete": "parameters-delete", "default": "parameters"}

    @extend_schema(operation_id="parameters_list", responses=ParameterSerializer(many=True))
    def get(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="parameters_create",
        request=ParameterCreateSerializer,
        responses={201: ParameterNameSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ParameterCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            parameter = parameter_create(
                operator=request.user.operator, **serializer.validated_data
            )
        except ParameterConflict as exc:
            raise Conflict(str(exc)) from None
        return Response({"name": parameter.name}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="parameters_delete",
        request=ParameterDeleteSerializer,
        responses={200: ParameterDeleteResultSerializer},
    )
    def delete(self, request: Request) -> Response:
        serializer = ParameterDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = parameters_delete(
            operator=request.user.operator, names=serializer.validated_data["parameters"]
        )
        return Response(
            {
                "deletedCount": len(result.deleted),
                "deletedParameters": result.deleted,
                "invalidParameters": result.invalid,
            }
        )


NAME_PARAMETER = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, description="The parameter's full name; may contain /."
)


class ParameterDetailView(OperatorParametersMixin, GenericAPIView):
    """Read or change one parameter."""

    serializer_class = ParameterSerializer
    required_scopes = {
        "get": "global-parameters:read:parameters",
        "patch": "global-parameters:update:parameters",
    }
    rate_limit_group = "parameters"

    def get_object(self) -> Parameter:
        parameter = self.get_queryset().filter(name=self.kwargs["name"]).first()
        if parameter is None:
            raise Http404
        return parameter

    @extend_schema(operation_id="parameters_get", parameters=[NAME_PARAMETER])
    def get(self, request: Request, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="parameters_update",
        parameters=[NAME_PARAMETER],
        request=ParameterUpdateSerializer,
        responses={200: ParameterNameSerializer},
    )
    def patch(self, request: Request, name: str) -> Response:
        parameter = self.get_object()
        serializer = ParameterUpdateSerializer(parameter, data=request.data)
        serializer.is_valid(raise_exception=True)
        parameter_update(parameter=parameter, **serializer.validated_data)
        return Response({"name": parameter.name})
