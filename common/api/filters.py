"""`sortBy` / `sortOrder` for list endpoints.

A view names `sort_fields` (API name -> ORM field) and `default_sort`; the primary key is
always the last ordering key so that `skip` pages are stable.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend

SORT_ORDERS = {"ASC": "", "DESC": "-"}


class SortFilterBackend(BaseFilterBackend):
    def filter_queryset(self, request, queryset, view):
        sort_fields: dict[str, str] = getattr(view, "sort_fields", {})
        if not sort_fields:
            return queryset
        sort_by = request.query_params.get("sortBy") or view.default_sort
        if sort_by not in sort_fields:
            allowed = ", ".join(sort_fields)
            raise ValidationError({"sortBy": [f"sortBy must be one of: {allowed}."]})
        order = (request.query_params.get("sortOrder") or "ASC").upper()
        if order not in SORT_ORDERS:
            raise ValidationError({"sortOrder": ["sortOrder must be ASC or DESC."]})
        sign = SORT_ORDERS[order]
        return queryset.order_by(f"{sign}{sort_fields[sort_by]}", f"{sign}pk")

    def get_schema_operation_parameters(self, view) -> list[dict]:
        sort_fields = getattr(view, "sort_fields", {})
        if not sort_fields:
            return []
        return [
            {
                "name": "sortBy",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(sort_fields)},
                "allowEmptyValue": True,
                "description": "Empty: the default order.",
            },
            {
                "name": "sortOrder",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(SORT_ORDERS)},
                "allowEmptyValue": True,
                "description": "Empty: ASC.",
            },
        ]
