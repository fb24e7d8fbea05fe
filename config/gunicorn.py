"""gunicorn settings for Tally: `gunicorn -c python:config.gunicorn config.wsgi:application`.

gunicorn answers requests it cannot parse (a request line over 4,094 bytes: 414, headers
too large: 431, a malformed line or header: 400) itself, before Django, with an HTML
page. API clients get the shared JSON error body instead, with a fixed message per
status: the offending text is never repeated back.
"""

from __future__ import annotations

import gc
from http import HTTPStatus

from gunicorn import util

from common.json import dumps

_MESSAGES = {
    400: "The request could not be parsed.",
    403: "The request is forbidden.",
    414: "The request line (method, path and query) is too long.",
    417: "The Expect header cannot be met.",
    431: "The request headers are too large.",
    500: "An unexpected internal error occurred.",
    501: "The transfer coding is not supported.",
}


def _write_json_error(sock, status_int, reason, mesg) -> None:
    # The shared error shape (common.api.errors), built without Django: this runs in
    # gunicorn's own code, before any request reaches the application.
    body = dumps(
        {
            "status": status_int,
            "error": _phrase(status_int, reason),
            "message": _MESSAGES.get(status_int, reason),
            "details": [],
        }
    )
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _phrase(status_int: int, reason: str) -> str:
    try:
        return HTTPStatus(status_int).phrase
    except ValueError:
        return reason


# gunicorn's workers call util.write_error by name for these answers; no setting changes
# their body, so the function is replaced for this process.
util.write_error = _write_json_error


def post_worker_init(worker) -> None:
    """What the worker loaded (modules, settings, URL patterns) lives as long as it does:
    frozen out of the garbage collector's full passes, which otherwise walk all of it
    each time a large answer (a year's platform report) allocates enough to start one."""
    gc.freeze()
