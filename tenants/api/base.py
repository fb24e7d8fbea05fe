"""The two kinds of endpoint: an operator's (OAuth token, scopes) and the platform's (key).

Every operator endpoint is an `OperatorViewSet`: it names its `queryset`, serializers,
`required_scopes` per action and rate-limit group, and calls a service for every write.
The base keeps the rules that must never differ between endpoints: rows are always the
caller's operator's, and an id that is malformed or not the caller's is the same 404.
"""

from __future__ import annotations

import uuid

from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets
from rest_framework.views import APIView

from common.api.filters import SortFilterBackend
from common.ids import uuid_or_none
from tenants.api.authentication import PlatformKeyAuthentication
from tenants.api.permissions import PlatformKeyPermission

# Router lookups accept only this shape; anything else is a path that does not exist.
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def caller_operator(view):
    """The operator whose rows a view may touch; None while the OpenAPI schema is built
    (there is no caller then, and None matches no rows)."""
    if getattr(view, "swagger_fake_view", False):
        return None
    return view.request.user.operator


class OperatorViewSet(viewsets.GenericViewSet):
    """An operator endpoint: the caller's rows only, looked up by UUID (`lookup_field`
    "pk") or by another unique field."""

    lookup_value_regex = UUID_PATTERN
    filter_backends = [DjangoFilterBackend, SortFilterBackend]

    def get_queryset(self):
        return self.queryset.filter(operator=caller_operator(self))

    def lookup_uuid(self) -> uuid.UUID:
        """The id in the path; a malformed one is a 404, like an id that is not ours."""
        found = uuid_or_none(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
        if found is None:
            raise Http404
        return found

    def get_object(self):
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        if self.lookup_field == "pk":
            value = self.lookup_uuid()
        elif "\x00" in value:  # no stored name holds one (PostgreSQL text cannot)
            raise Http404
        found = self.get_queryset().filter(**{self.lookup_field: value}).first()
        if found is None:
            raise Http404
        return found


class PlatformAPIView(APIView):
    """Platform endpoints: a platform API key, never an operator token; one rate-limit group."""

    authentication_classes = [PlatformKeyAuthentication]
    permission_classes = [PlatformKeyPermission]
    rate_limit_group = "platform"
