"""The one error body every endpoint answers with, for every status:

{"status": 400, "error": "Bad Request", "message": "…", "details": [{"field", "message"}]}
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.response import Response

from common.api.exceptions import Conflict, ServiceUnavailable
from common.errors import ServiceConflict
from common.json import dumps

logger = logging.getLogger("tally.api")

NON_FIELD = "non_field_errors"
# A database that cannot be reached (down, restarting, out of connections): a 503 the
# client may retry, never a 500. Connections are re-made on the next request.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "error": reason_phrase(status),
        "message": message,
        "details": details or [],
    }
    body.update(extra)
    return body


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> HttpResponse:
    """A plain Django response in the error shape, for code outside DRF views."""
    response = HttpResponse(
        dumps(error_body(status, message, details, **extra)),
        status=status,
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def flatten_validation_errors(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Turn DRF's nested error structure into [{"field": "a.b[0]", "message": …}]."""
    if isinstance(detail, dict):
        items: list[dict[str, Any]] = []
        for key, value in detail.items():
            if key == NON_FIELD:
                field = prefix
            elif isinstance(key, int):  # DRF keys list-item errors by index
                field = f"{prefix}[{key}]"
            else:
                field = f"{prefix}.{key}" if prefix else str(key)
            items.extend(flatten_validation_errors(value, field))
        return items
    if isinstance(detail, list):
        items = []
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                items.extend(flatten_validation_errors(value, f"{prefix}[{index}]"))
            else:
                items.extend(flatten_validation_errors(value, prefix))
        return items
    return [{"field": prefix or None, "message": str(detail)}]


def _validation_message(details: list[dict[str, Any]]) -> str:
    if not details:
        return "The request is invalid."
    first = details[0]
    text = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    if len(details) > 1:
        text += f" (and {len(details) - 1} more)"
    return text


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every handled exception answers in the shared shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DATABASE_UNAVAILABLE):
        logger.warning("The database is unavailable: %s", type(exc).__name__)
        exc = ServiceUnavailable()
    elif isinstance(exc, ServiceConflict):
        exc = Conflict(str(exc))
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if not isinstance(exc, exceptions.APIException):
        # Unhandled: log it with its traceback and answer a bare 500 without one.
        request = context.get("request")
        logger.exception(
            "Unhandled error in %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
        )
        return Response(error_body(500, "An unexpected internal error occurred."), status=500)

    headers: dict[str, str] = {}
    if isinstance(exc, exceptions.ValidationError):
        details = flatten_validation_errors(exc.detail)
        body = error_body(exc.status_code, _validation_message(details), details)
    else:
        detail = exc.detail
        if isinstance(detail, dict | list):
            details = flatten_validation_errors(detail)
            message = _validation_message(details)
        else:
            details, message = [], str(detail)
        body = error_body(exc.status_code, message, details)

    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif getattr(exc, "retry_after", None):  # a state that passes (a backfill running)
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        authenticate_header = _authenticate_header(context)
        if authenticate_header:
            headers["WWW-Authenticate"] = authenticate_header
    return Response(body, status=exc.status_code, headers=headers)


def _authenticate_header(context: dict[str, Any]) -> str | None:
    view = context.get("view")
    request = context.get("request")
    if view is None or request is None:
        return None
    return view.get_authenticate_header(request)


# Django-level handlers (urls.py): unknown routes and errors outside DRF views.

BROWSER_PREFIXES = ("/admin/", "/dashboard/", "/platform/", "/login/", "/logout/", "/account/")


def _is_browser_page(request: HttpRequest) -> bool:
    return request.path.startswith(BROWSER_PREFIXES)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(400, "The request could not be understood.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(403, "You do not have permission to perform this action.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_browser_page(request):
        from django.views.defaults import page_not_found

        return page_not_found(request, exception)
    return error_response(404, f"No route matches {request.path}.")


def handler500(request: HttpRequest) -> HttpResponse:
    return error_response(500, "An unexpected internal error occurred.")


class DatabaseUnavailableMiddleware:
    """The same 503 for views outside DRF (the token endpoint), on API paths."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DATABASE_UNAVAILABLE) and not _is_browser_page(request):
            logger.warning("The database is unavailable: %s", type(exception).__name__)
            return error_response(
                503,
                ServiceUnavailable.default_detail,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return None
