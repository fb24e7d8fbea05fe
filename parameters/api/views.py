"""Global parameters: /global-parameters/v1/parameters[/{name}] (names may contain `/`)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

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
from parameters.services import parameter_create, parameter_update, parameters_delete
from tenants.api.base import OperatorViewSet

NAME_PARAMETER = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, description="The parameter's full name; may contain /."
)


class ParameterViewSet(mixins.ListModelMixin, OperatorViewSet):
    """Global parameters, addressed by their hierarchical name."""

    queryset = Parameter.objects.all()
    serializer_class = ParameterSerializer
    lookup_field = "name"
    filterset_class = ParameterFilterSet
    sort_fields = {"name": "name", "description": "description", "updatedAt": "updated_at"}
    default_sort = "name"
    list_key = "parameters"
    required_scopes = {
        "list": "global-parameters:read:parameters",
        "create": "global-parameters:create:parameters",
        "bulk_destroy": "global-parameters:delete:parameters",
        "retrieve": "global-parameters:read:parameters",
        "partial_update": "global-parameters:update:parameters",
    }
    rate_limit_group = {"bulk_destroy": "parameters-delete", "default": "parameters"}

    @extend_schema(operation_id="parameters_list", responses=ParameterSerializer(many=True))
    def list(self, request: Request) -> Response:
        return super().list(request)

    @extend_schema(
        operation_id="parameters_create",
        request=ParameterCreateSerializer,
        responses={201: ParameterNameSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = ParameterCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        parameter = parameter_create(operator=request.user.operator, **serializer.validated_data)
        return Response({"name": parameter.name}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="parameters_delete",
        request=ParameterDeleteSerializer,
        responses={200: ParameterDeleteResultSerializer},
    )
    def bulk_destroy(self, request: Request) -> Response:
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

    @extend_schema(operation_id="parameters_get", parameters=[NAME_PARAMETER])
    def retrieve(self, request: Request, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="parameters_update",
        parameters=[NAME_PARAMETER],
        request=ParameterUpdateSerializer,
        responses={200: ParameterNameSerializer},
    )
    def partial_update(self, request: Request, name: str) -> Response:
        parameter = self.get_object()
        serializer = ParameterUpdateSerializer(parameter, data=request.data)
        serializer.is_valid(raise_exception=True)
        parameter_update(parameter=parameter, **serializer.validated_data)
        return Response({"name": parameter.name})
