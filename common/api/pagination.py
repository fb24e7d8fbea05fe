"""`limit`/`skip` pagination answering `{"<plural>": [...], "total": N}`."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def query_int(request, name: str, default: int, maximum: int | None = None) -> int:
    """A whole-number query parameter of 0 or more (empty: the default), or a 400."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also read "٣" (an Arabic-Indic three) or "+5".
    if not (raw.isascii() and raw.removeprefix("-").isdigit()):
        raise ValidationError({name: [f"{name} must be a whole number."]})
    value = int(raw)
    if value < 0:
        raise ValidationError({name: [f"{name} must not be negative."]})
    if maximum is not None and value > maximum:
        raise ValidationError({name: [f"{name} must be at most {maximum}."]})
    return value


def list_key_for(view) -> str:
    """The name of a list's array: the view's `get_list_key()` or `list_key`."""
    if hasattr(view, "get_list_key"):
        return view.get_list_key()
    return getattr(view, "list_key", "items")


class LimitSkipPagination(BasePagination):
    """The list key comes from the view's `list_key` (e.g. "meterTypes")."""

    def paginate_queryset(self, queryset, request, view=None) -> list[Any]:
        self.limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        self.skip = query_int(request, "skip", 0)
        self.list_key = list_key_for(view)
        self.total = queryset.count()
        if self.limit == 0 or self.skip >= self.total:
            return []
        return list(queryset[self.skip : self.skip + self.limit])

    def get_paginated_response(self, data) -> Response:
        return Response({self.list_key: data, "total": self.total})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        key = getattr(self, "list_key", "items")
        return {
            "type": "object",
            "required": [key, "total"],
            "properties": {key: schema, "total": {"type": "integer"}},
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"How many items to return (default {DEFAULT_LIMIT}, "
                f"at most {MAX_LIMIT}; empty: the default).",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                "allowEmptyValue": True,
            },
            {
                "name": "skip",
                "in": "query",
                "required": False,
                "description": "How many items to skip (empty: 0).",
                "schema": {"type": "integer", "minimum": 0},
                "allowEmptyValue": True,
            },
        ]
