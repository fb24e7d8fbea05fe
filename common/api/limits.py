"""Request-size limits, enforced before any parsing.

A view may set `max_body_bytes`; otherwise TALLY["DEFAULT_MAX_BODY_BYTES"] applies. The
check reads Content-Length, so an oversized body is refused without being read; a chunked
body (no Content-Length) is read up to the limit and no further.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from common.api.errors import error_response


def max_body_bytes_for(view_func: Callable) -> int:
    view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
    limit = getattr(view_func, "max_body_bytes", None) or getattr(
        view_class, "max_body_bytes", None
    )
    return limit or settings.TALLY["DEFAULT_MAX_BODY_BYTES"]


def too_large_response(limit: int) -> HttpResponse:
    return error_response(
        413, f"The request body is larger than this endpoint's limit of {limit} bytes."
    )


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        limit = max_body_bytes_for(view_func)
        if _is_chunked(request) and not request.META.get("CONTENT_LENGTH"):
            return _read_chunked_body(request, limit)
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return error_response(400, "The Content-Length header is not a number.")
        if length > limit:
            return too_large_response(limit)
        return None


def _is_chunked(request: HttpRequest) -> bool:
    return "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()


def _read_chunked_body(request: HttpRequest, limit: int) -> HttpResponse | None:
    """A chunked body has no Content-Length, so Django would read it as empty. The server
    (gunicorn) has already taken the chunk framing off: read at most one byte past the
    limit, refuse a larger body (413), and give Django the rest as a sized body."""
    stream = request.META["wsgi.input"]
    parts, size = [], 0
    while size <= limit:
        part = stream.read(min(65536, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        return too_large_response(limit)
    body = b"".join(parts)
    request.META["CONTENT_LENGTH"] = str(len(body))
    request._stream = io.BytesIO(body)
    return None
