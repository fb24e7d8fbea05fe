"""Base classes for platform API views."""

from __future__ import annotations

from rest_framework.views import APIView

from tenants.api.authentication import PlatformKeyAuthentication
from tenants.api.permissions import PlatformKeyPermission


class PlatformAPIView(APIView):
    """Platform endpoints: a platform API key, never an operator token; one rate-limit group."""

    authentication_classes = [PlatformKeyAuthentication]
    permission_classes = [PlatformKeyPermission]
    rate_limit_group = "platform"


def caller_operator(view):
    """The operator whose rows a view may touch; None while the OpenAPI schema is built
    (there is no caller then, and None matches no rows)."""
    if getattr(view, "swagger_fake_view", False):
        return None
    return view.request.user.operator
