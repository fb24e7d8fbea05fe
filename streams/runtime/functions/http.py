"""`transforms/http`: call an HTTP API for each record and pass the record on with the
answer in `httpResponse`.

The rules Tally settles where the reference product's export leaves them implicit:

* The request: `method`, `uri`, `qs` (query parameters), `headers` (an object, or a list
  of `{"key", "value"}`) and `body`. All of them may hold `${payload.path}` templates; a
  body that is exactly one template (`"${payload.meterType}"`) sends that value as JSON,
  any other body is sent as rendered. Values put into the URI path are percent-encoded,
  so a record cannot change which resource is called. Params may reference global
  parameters as `{{param:name}}` (resolved before the templates).
* OAuth2 (`authType: "oAuth2"`): the export never carries credentials, so Tally reads
  them from `oAuth2Authentication.clientId` / `clientSecret` (and `username` / `password`
  for the password grant named in `authentication`), which normally reference global
  parameters: `"clientSecret": "{{param:billing/client-secret}}"`. The token comes from
  `accessTokenURL` (with `audience`), client credentials in the form body
  (`clientAuthentication: "sendInBody"`) or as HTTP Basic, and is kept per node until
  shortly before `expires_in` runs out (or until the API answers 401).
* The answer: `payload.httpResponse` is the response body, JSON-decoded (numbers with a
  fraction are Decimal), the text when it is not JSON, null when empty. With
  `useResponseHeaderKey`, `httpResponseHeaders` holds the response headers (lower-case
  names) and `httpStatusCode` the status.
* Errors: a status of 4xx or 5xx, a timeout, a failed connection. With `shouldRetry`,
  5xx, 429, timeouts and failed connections are tried again up to `retries` more times
  (12 at most). What then happens depends on `errorMode`:
  - "defer" (every real export) and anything unknown: the record fails at this node with
    the reason; the rest of the batch goes on, and the failed record keeps its reason for
    whoever looks at it or reprocesses it;
  - "ignore": the record passes on, `httpResponse` holding the error body (or null) and
    `httpError` the reason, so a later node can route it;
  - "stop": the record fails and so does every record after it in the batch, without
    further requests (the closest a node can come to stopping its stream).
  A destination refused by the outbound guard always fails the record: that is a
  configuration problem, never an answer to pass on.
* A preview sends nothing: the record passes with `httpResponse: null`, and the request
  it would have made is listed in the preview's changes (global parameters shown as
  their `{{param:…}}` references). `useMockData` is therefore not needed and ignored, as
  are `useCache` / `cacheSeconds` (off in every real export): each record is one call.
* Every request that leaves Tally (token requests and redirect hops included) counts as
  a gateway request of the operator on the connection `<stream id>/<node id>`, as it
  goes out (in Redis, `tenants.accounting`): a pass rolled back does not undo a request
  that was made, and a rerun answered from the memo sends nothing and counts nothing.
* Delivery is at least once: within a batch a request is never repeated (re-run passes
  reuse its answer), but a batch whose worker dies is processed again, requests
  included. An API that must not see a request twice should be given an idempotency key
  in a header (`${payload.id}`, say).
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from common.json import InvalidJSON, dumps, find_problem, loads_lenient
from parameters.services import ParameterNotFound, parameters_substitute
from streams.runtime.base import Emit, Function, Item, RecordFailed, function
from streams.runtime.outbound import (
    OutboundFailed,
    OutboundRefused,
    OutboundResponse,
    send,
)
from streams.runtime.paths import (
    MISSING,
    Reference,
    Template,
    TemplateError,
    compile_template,
    to_text,
)
from tenants.accounting import GATEWAY_REQUEST, HTTP, usage_count

PREFIX = "transforms/http"
MAX_RETRIES = 12
# Seconds before the first retry, doubled for each next one and capped: a batch waits for
# its calls, so the reference product's hour-long retry span is not an option here.
RETRY_BASE_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 5.0
# A token is renewed this long before its stated expiry, for clock skew and slow calls.
TOKEN_EXPIRY_MARGIN_SECONDS = 30
TOKEN_DEFAULT_LIFETIME_SECONDS = 300
_RETRYABLE_STATUSES = frozenset({429})
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class _Request:
    method: str
    url: str  # with the query string
    headers: dict[str, str]
    body: bytes | None

    def shown(self) -> str:
        """Method and URL without the query string, which may carry secrets."""
        parts = urlsplit(self.url)
        return f"{self.method} {urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))}"


@dataclass(frozen=True)
class _Outcome:
    """What one record's call came to; kept in the memo so a rerun never calls again."""

    response: OutboundResponse | None = None
    error: str | None = None  # why the call counts as failed
    refused: bool = False


@function("transforms/http")
class HttpCall(Function):
    """Calls an HTTP API once per record (see the module docstring for the rules)."""

    def process(self, items: list[Item], emit: Emit) -> None:
        try:
            params = parameters_substitute(self.ctx.operator_id, self.params)
        except ParameterNotFound as exc:
            for item in items:
                emit.fail(item, f"{PREFIX}: the global parameter {exc.name!r} does not exist")
            return
        error_mode = str(params.get("errorMode") or "defer").lower()
        # The same request made twice for one source record (a script may push several
        # alike items) is told apart by how many came before it, stable across reruns.
        seen: Counter[tuple] = Counter()
        stopped_by: str | None = None
        for item in items:
            if stopped_by is not None:
                emit.fail(item, stopped_by)
                continue
            if not isinstance(item.payload, dict):
                emit.fail(item, f"{PREFIX}: the record is not an object")
                continue
            try:
                # A preview reports the request with `{{param:…}}` references unresolved,
                # so whoever previews a stream never sees a sensitive value in it.
                request = _build_request(
                    params if self.ctx.side_effects else self.params, item.payload
                )
            except RecordFailed as failure:
                emit.fail(item, failure.reason)
                continue
            if not self.ctx.side_effects:
                self.ctx.changes.append(
                    {
                        "node": self.ctx.node_id,
                        "http": {"method": request.method, "url": request.url},
                    }
                )
                emit(Item({**item.payload, "httpResponse": None}, item.origin))
                continue
            identity = (item.origin, request.method, request.url, request.body)
            seen[identity] += 1
            key = ("call", *identity, seen[identity])
            outcome = self.ctx.memo.get(key)
            if outcome is None:
                outcome = self._call(params, request)
                self.ctx.memo[key] = outcome
            try:
                payload = _answered(params, item.payload, outcome, error_mode)
            except RecordFailed as failure:
                emit.fail(item, failure.reason)
                if error_mode == "stop":
                    stopped_by = f"{PREFIX}: not called, the stream stopped at an earlier error"
                continue
            emit(Item(payload, item.origin))

    # --- Calling --------------------------------------------------------------------

    def _call(self, params: dict[str, Any], request: _Request) -> _Outcome:
        attempts = 1
        if params.get("shouldRetry"):
            attempts += min(max(int(params.get("retries") or 0), 0), MAX_RETRIES)
        outcome = _Outcome()
        for attempt in range(attempts):
            if attempt:
                time.sleep(
                    min(RETRY_BASE_DELAY_SECONDS * 2 ** (attempt - 1), RETRY_MAX_DELAY_SECONDS)
                )
            outcome, retryable = self._attempt(params, request)
            if not retryable:
                break
        return outcome

    def _attempt(self, params: dict[str, Any], request: _Request) -> tuple[_Outcome, bool]:
        """One try: (outcome, whether another try may do better)."""
        headers = dict(request.headers)
        token = None
        try:
            if str(params.get("authType") or "none").lower() == "oauth2":
                token = self._token(params)
                prefix = (params.get("oAuth2Authentication") or {}).get("headerPrefix") or "Bearer"
                headers["Authorization"] = f"{prefix} {token}"
            response = send(
                request.method,
                request.url,
                headers=headers,
                body=request.body,
                on_request=self._count_request,
            )
        except OutboundRefused as exc:
            return _Outcome(error=f"{PREFIX}: {exc.reason}", refused=True), False
        except OutboundFailed as exc:
            return _Outcome(error=f"{PREFIX}: {request.shown()} {exc.reason}"), exc.retryable
        except _TokenFailed as exc:
            return _Outcome(error=exc.reason, refused=exc.refused), exc.retryable
        if response.status == 401 and token is not None:
            _tokens.forget(self._token_key(params))  # revoked or expired early
        if response.status < 400:
            return _Outcome(response=response), False
        reason = f"{PREFIX}: {request.shown()} answered {response.status} {response.reason}"
        excerpt = response.body[:200].decode("utf-8", "replace").strip()
        if excerpt:
            reason += f": {excerpt}"
        retryable = response.status >= 500 or response.status in _RETRYABLE_STATUSES
        return _Outcome(response=response, error=reason), retryable

    def _count_request(self) -> None:
        usage_count(
            operator_id=self.ctx.operator_id,
            kind=GATEWAY_REQUEST,
            key=HTTP,
            connection=f"{self.ctx.stream_id}/{self.ctx.node_id}",
        )

    # --- OAuth2 ---------------------------------------------------------------------

    def _token_key(self, params: dict[str, Any]) -> tuple:
        auth = params.get("oAuth2Authentication") or {}
        return (
            self.ctx.operator_id,
            self.ctx.stream_id,
            self.ctx.node_id,
            auth.get("accessTokenURL"),
            auth.get("audience"),
            auth.get("clientId"),
            auth.get("username"),
            params.get("authentication"),
        )

    def _token(self, params: dict[str, Any]) -> str:
        key = self._token_key(params)
        token = _tokens.get(key)
        if token is not None:
            return token
        auth = params.get("oAuth2Authentication") or {}
        token_url = auth.get("accessTokenURL")
        client_id = auth.get("clientId") or ""
        client_secret = auth.get("clientSecret") or ""
        if not token_url:
            raise _TokenFailed(f"{PREFIX}: oAuth2Authentication.accessTokenURL is not set")
        if not client_id or not client_secret:
            raise _TokenFailed(
                f"{PREFIX}: set oAuth2Authentication.clientId and clientSecret, e.g. "
                "as {{param:name}} references to global parameters"
            )
        grant = str(params.get("authentication") or "client_credentials")
        form = {"grant_type": grant}
        if auth.get("audience"):
            form["audience"] = auth["audience"]
        if grant == "password":
            form["username"] = auth.get("username") or ""
            form["password"] = auth.get("password") or ""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if str(auth.get("clientAuthentication") or "sendInBody") == "sendInBody":
            form["client_id"] = client_id
            form["client_secret"] = client_secret
        else:
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        shown = f"the token request to {_without_query(token_url)}"
        try:
            response = send(
                "POST",
                token_url,
                headers=headers,
                body=urlencode(form).encode(),
                on_request=self._count_request,
            )
        except OutboundRefused as exc:
            raise _TokenFailed(f"{PREFIX}: {exc.reason}", refused=True) from None
        except OutboundFailed as exc:
            raise _TokenFailed(f"{PREFIX}: {shown} {exc.reason}", retryable=exc.retryable) from None
        if response.status >= 400:
            raise _TokenFailed(
                f"{PREFIX}: {shown} answered {response.status} {response.reason}",
                retryable=response.status >= 500 or response.status in _RETRYABLE_STATUSES,
            )
        try:
            answer = loads_lenient(response.body)
            token = answer["access_token"]
            if not isinstance(token, str) or not token:
                raise TypeError
        except (InvalidJSON, KeyError, TypeError):
            raise _TokenFailed(f"{PREFIX}: {shown} gave no access_token") from None
        lifetime = answer.get("expires_in")
        if not isinstance(lifetime, int | Decimal | str) or not str(lifetime).isdigit():
            lifetime = TOKEN_DEFAULT_LIFETIME_SECONDS
        _tokens.put(key, token, int(lifetime) - TOKEN_EXPIRY_MARGIN_SECONDS)
        return token


class _TokenFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool = False, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.refused = refused


class _TokenCache:
    """Access tokens by node and credentials, for this process. Never in the node's
    state: that is stored in the database as plain JSON."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] <= time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[0]

    def put(self, key: tuple, token: str, seconds: float) -> None:
        with self._lock:
            self._entries[key] = (token, time.monotonic() + max(seconds, 0))

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_tokens = _TokenCache()


# --- Building the request and reading the answer ---------------------------------------


def _build_request(params: dict[str, Any], payload: dict[str, Any]) -> _Request:
    method = str(params.get("method") or "GET").upper()
    uri = _render_uri(str(params.get("uri") or ""), payload)
    query = [
        (name, _template(str(value)).render_text(payload))
        for name, value in (params.get("qs") or {}).items()
    ]
    if query:
        parts = urlsplit(uri)
        joined = "&".join(filter(None, [parts.query, urlencode(query)]))
        uri = urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))
    headers = {"Accept": "application/json"}
    for name, value in _header_pairs(params.get("headers")):
        headers[name] = _template(str(value)).render_text(payload)
    body = None
    template = params.get("body")
    if template and method not in _BODYLESS_METHODS:
        body, content_type = _render_body(str(template), payload)
        headers.setdefault("Content-Type", content_type)
    return _Request(method, uri, headers, body)


def _header_pairs(headers: Any) -> list[tuple[str, Any]]:
    if isinstance(headers, dict):
        return list(headers.items())
    if isinstance(headers, list):
        return [
            (entry.get("key") or entry.get("name"), entry.get("value", ""))
            for entry in headers
            if isinstance(entry, dict) and (entry.get("key") or entry.get("name"))
        ]
    return []


def _content_type_of(text: str) -> str:
    try:
        loads_lenient(text)
    except InvalidJSON:
        return "text/plain; charset=utf-8"
    return "application/json"


def _answered(
    params: dict[str, Any], payload: dict[str, Any], outcome: _Outcome, error_mode: str
) -> dict[str, Any]:
    """The record to pass on for `outcome`; raises RecordFailed when it fails instead."""
    if outcome.error is not None and (outcome.refused or error_mode != "ignore"):
        raise RecordFailed(outcome.error)
    response = outcome.response
    result = {**payload, "httpResponse": _decoded(response) if response else None}
    if params.get("useResponseHeaderKey") and response is not None:
        result["httpResponseHeaders"] = dict(response.headers)
        result["httpStatusCode"] = response.status
    if outcome.error is not None:
        result["httpError"] = outcome.error
    return result


def _decoded(response: OutboundResponse) -> Any:
    if not response.body.strip():
        return None
    try:
        value = loads_lenient(response.body)
    except InvalidJSON:
        return response.body.decode("utf-8", "replace")
    problem = find_problem(value, "httpResponse")
    if problem is not None:
        where, why = problem
        raise RecordFailed(f"{PREFIX}: the response cannot be stored: {where}: {why}")
    return value


# --- Templates ------------------------------------------------------------------------


def _template(source: str) -> Template:
    try:
        return compile_template(source)
    except TemplateError as exc:
        raise RecordFailed(f"{PREFIX}: {exc}") from None


def _render_uri(source: str, payload: Any) -> str:
    """The URI with each reference's text percent-encoded whole ("/" and "?" included),
    so a record's value fills one path segment and never names another resource. Unlike
    other text templates, a missing or null value fails the record: `DELETE .../meters/`
    with the id left out would address the whole collection."""
    parts = []
    for part in _template(source).parts:
        if isinstance(part, str):
            parts.append(part)
            continue
        value = part.lookup(payload)
        if value is MISSING or value is None:
            raise RecordFailed(f"{PREFIX}: {part.source} in the uri has no value in the record")
        parts.append(quote(to_text(value), safe=""))
    return "".join(parts)


def _render_body(source: str, payload: Any) -> tuple[bytes, str]:
    """(body, content type): a single reference sends its value as JSON, any other
    template is sent as its text."""
    template = _template(source.strip())
    if len(template.parts) == 1 and isinstance(template.parts[0], Reference):
        value = template.parts[0].lookup(payload)
        if value is MISSING:
            raise RecordFailed(f"{PREFIX}: {template.parts[0].source} in the body has no value")
        return dumps(value), "application/json"
    text = template.render_text(payload)
    return text.encode(), _content_type_of(text)


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def token_cache_clear() -> None:
    """Forget every cached access token (for tests, and after credentials change)."""
    _tokens.clear()
