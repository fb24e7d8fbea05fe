"""Counting operators' API calls (see `tenants.accounting`)."""

from __future__ import annotations

from tenants import accounting


class ApiCallAccountingMiddleware:
    """Counts every request that authentication marked as an operator client's API call
    (`accounting.api_caller_mark`), by endpoint category, once its answer is ready.

    Whatever the status: a 400, 403, 404 or 429 answered to an authenticated client is a
    call it made. No database query: the count is one Redis round trip, and a Redis
    that cannot be reached loses the count, never the request.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        operator_id = accounting.api_caller(request)
        if operator_id is not None:
            accounting.usage_count(
                operator_id=operator_id,
                kind=accounting.API_CALL,
                key=accounting.api_category(request.path_info),
            )
        return response
