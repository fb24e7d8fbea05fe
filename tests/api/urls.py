"""Test-only endpoints that exercise the shared API conventions."""

from django.urls import include, path
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.filters import SortFilterBackend
from common.api.serializers import (
    NumberField,
    StrictCharField,
    TallyModelSerializer,
    TallySerializer,
)
from tenants.models import ApplicationAccess


class ApplicationSerializer(TallyModelSerializer):
    client_id = serializers.CharField(source="application.client_id", read_only=True)

    class Meta:
        model = ApplicationAccess
        fields = ["id", "client_id", "scopes", "created_at"]


class ApplicationListView(generics.ListAPIView):
    """Lists the caller's own applications: tenancy, pagination and sorting."""

    serializer_class = ApplicationSerializer
    required_scopes = {"get": "usage-metering:read:meters"}
    rate_limit_group = "meters"
    list_key = "applications"
    filter_backends = [SortFilterBackend]
    sort_fields = {"createdAt": "created_at", "id": "id"}
    default_sort = "createdAt"

    def get_queryset(self):
        return ApplicationAccess.objects.filter(operator=self.request.user.operator).select_related(
            "application"
        )


class EchoSerializer(TallySerializer):
    name = StrictCharField(max_length=10)
    amount = NumberField(min_value=0)
    kind = StrictCharField(required=False)

    class Meta:
        immutable_fields = ["kind"]


class EchoView(APIView):
    required_scopes = {
        "post": "usage-metering:create:meters",
        "patch": "usage-metering:update:meters",
    }
    rate_limit_group = "meters"
    max_body_bytes = 200

    def post(self, request):
        serializer = EchoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.data, status=201)

    def patch(self, request):
        serializer = EchoSerializer(instance=object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class BoomView(APIView):
    required_scopes = {"get": "usage-metering:read:meters"}
    rate_limit_group = "meters"

    def get(self, request):
        raise RuntimeError("secret internals that must not leak")


urlpatterns = [
    path("test/applications", ApplicationListView.as_view()),
    path("test/echo", EchoView.as_view()),
    path("test/boom", BoomView.as_view()),
    path("", include("config.urls")),
]

handler400 = "common.api.errors.handler400"
handler403 = "common.api.errors.handler403"
handler404 = "common.api.errors.handler404"
handler500 = "common.api.errors.handler500"
