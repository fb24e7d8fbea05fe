"""`GET /health`: can this process reach its database and Redis? For load balancers and
monitoring; no credentials, no rate limit."""

from __future__ import annotations

from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.errors import DATABASE_UNAVAILABLE
from common.api.ratelimit import fail_open, redis_reachable

HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["ok", "degraded", "unavailable"]),
        "database": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "redis": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "rateLimiterFailOpen": serializers.IntegerField(
            help_text="Requests this process let through unlimited while Redis was down."
        ),
    },
)


class HealthView(APIView):
    """200 while the database answers (Redis down is "degraded": rate limits fail open);
    503 while it does not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    extra_error_statuses = ["503"]

    @extend_schema(operation_id="health", responses={200: HEALTH, 503: HEALTH}, auth=[])
    def get(self, request: Request) -> Response:
        database = _database_reachable()
        redis = redis_reachable()
        status = ("ok" if redis else "degraded") if database else "unavailable"
        body = {
            "status": status,
            "database": "ok" if database else "unavailable",
            "redis": "ok" if redis else "unavailable",
            "rateLimiterFailOpen": fail_open.count,
        }
        return Response(body, status=200 if database else 503)


def _database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DATABASE_UNAVAILABLE:
        connection.close_if_unusable_or_obsolete()
        return False
