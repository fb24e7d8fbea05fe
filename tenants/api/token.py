"""`POST /oauth/token`: OAuth2 client-credentials tokens (RFC 6749 §4.4).

Accepts a JSON or form body with client_id, client_secret, grant_type and audience (or
the client credentials in an HTTP Basic header). Tally checks the request's shape, the
audience and the rate limit, then hands the OAuth exchange itself to
django-oauth-toolkit. Error bodies carry the OAuth2 error code in `error` (RFC 6749
§5.2) plus the `status`/`message` every Tally error has.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauth2_provider.settings import oauth2_settings

from common.api.errors import error_body, error_response
from common.api.ratelimit import rate_limit_take, remember_result
from common.json import InvalidJSON, dumps, loads
from tenants.accounting import api_caller_mark
from tenants.services import operator_mark_active

TOKEN_FIELDS = ("grant_type", "client_id", "client_secret", "audience", "scope")
# What goes on to oauthlib; `audience` is Tally's own check.
OAUTH_FIELDS = ("grant_type", "client_id", "client_secret", "scope")


class TokenRequestError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def oauth_error_response(status: int, code: str, description: str, headers=None) -> HttpResponse:
    # Here `error` is the OAuth2 code, as OAuth client libraries expect.
    body = {**error_body(status, description), "error": code, "error_description": description}
    response = HttpResponse(dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="oauth"'
    return response


def parse_token_request(request: HttpRequest) -> dict[str, str]:
    content_type = request.content_type or ""
    if content_type == "application/json":
        try:
            data = loads(request.body or b"null")
        except InvalidJSON as exc:
            where = f"{exc.where}: " if exc.where else ""
            raise TokenRequestError(400, "invalid_request", f"{where}{exc.message}") from None
        if not isinstance(data, dict):
            raise TokenRequestError(400, "invalid_request", "The body must be a JSON object.")
    elif content_type == "application/x-www-form-urlencoded":
        form = QueryDict(request.body, encoding="utf-8")
        repeated = [key for key, values in form.lists() if len(values) > 1]
        if repeated:
            # Named only when it is one of ours: the message never repeats raw input.
            name = repeated[0] if repeated[0] in OAUTH_FIELDS else "A parameter"
            raise TokenRequestError(400, "invalid_request", f"{name} is repeated.")
        data = form.dict()
        if any("\x00" in text for pair in data.items() for text in pair):
            raise TokenRequestError(400, "invalid_request", "A parameter contains a NUL character.")
    else:
        raise TokenRequestError(
            400,
            "invalid_request",
            "Send the body as application/json or application/x-www-form-urlencoded.",
        )
    unknown = sorted(set(data) - set(TOKEN_FIELDS))
    if unknown:
        raise TokenRequestError(400, "invalid_request", f"Unknown parameter: {unknown[0]}.")
    for key, value in data.items():
        if not isinstance(value, str):
            raise TokenRequestError(400, "invalid_request", f"{key} must be a string.")
    return data


def basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenRequestError(
            401, "invalid_client", "The Basic authorization header is malformed."
        ) from None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        raise TokenRequestError(
            401, "invalid_client", "The Basic authorization header is malformed."
        )
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(client_secret)


def _same_audience(sent: str, expected: str) -> bool:
    return sent.rstrip("/") == expected.rstrip("/")


class _ParamsCore(OAuthLibCore):
    """Feeds oauthlib the parameters Tally already parsed, whatever the body's format,
    and keeps its validator, which knows the operator of the client it authenticated."""

    def __init__(self) -> None:
        self.validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS()
        server = oauth2_settings.OAUTH2_SERVER_CLASS(
            self.validator, **oauth2_settings.server_kwargs
        )
        super().__init__(server=server)

    def extract_body(self, request):
        return request.tally_oauth_params


@method_decorator(csrf_exempt, name="dispatch")
class TokenView(View):
    max_body_bytes = 16 * 1024
    http_method_names = ["post", "options"]

    def http_method_not_allowed(self, request, *args, **kwargs) -> HttpResponse:
        return error_response(
            405, f"Method {request.method} is not allowed here.", headers={"Allow": "POST"}
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._issue(request)
        except TokenRequestError as exc:
            return oauth_error_response(exc.status, exc.code, exc.description)

    def _issue(self, request: HttpRequest) -> HttpResponse:
        data = parse_token_request(request)
        basic = basic_credentials(request)
        if basic is not None:
            if "client_id" in data and data["client_id"] != basic[0]:
                raise TokenRequestError(
                    400, "invalid_request", "client_id differs from the Authorization header."
                )
            data["client_id"], data["client_secret"] = basic

        identity = data.get("client_id") or f"ip:{request.META.get('REMOTE_ADDR', '')}"
        limit = rate_limit_take(group="token", identity=f"token:{identity}")
        if limit is not None:  # None: Redis unreachable, the limiter fails open
            remember_result(request, limit)
        if limit is not None and not limit.allowed:
            raise TokenRequestError(429, "slow_down", "Too many token requests; retry later.")

        for field in ("grant_type", "client_id", "client_secret", "audience"):
            if not data.get(field):
                raise TokenRequestError(400, "invalid_request", f"{field} is required.")
        if data["grant_type"] != "client_credentials":
            raise TokenRequestError(
                400, "unsupported_grant_type", "grant_type must be client_credentials."
            )
        expected = settings.TALLY["API_AUDIENCE"]
        if not _same_audience(data["audience"], expected):
            raise TokenRequestError(400, "invalid_request", f"audience must be {expected}.")

        request.tally_oauth_params = [(key, data[key]) for key in OAUTH_FIELDS if key in data]
        core = _ParamsCore()
        _uri, _headers, body, status = core.create_token_response(request)
        payload = loads(body)
        operator_id = core.validator.operator_id
        if operator_id is not None:
            # Once the client is authenticated, its request is an API call of its
            # operator (category `oauth`), answered with a token or refused (a scope
            # not allowed), as every other endpoint counts its authenticated callers.
            api_caller_mark(request, operator_id)
        if status != 200:
            code = payload.get("error", "invalid_request")
            description = payload.get("error_description") or _DESCRIPTIONS.get(code, code)
            raise TokenRequestError(status, code, description)
        operator_mark_active(operator_id=operator_id)
        answer = {
            "access_token": payload["access_token"],
            "expires_in": payload["expires_in"],
            "scope": payload.get("scope", ""),
            "token_type": payload["token_type"],
        }
        response = HttpResponse(dumps(answer), content_type="application/json")
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response


_DESCRIPTIONS = {
    "invalid_client": "Client authentication failed: unknown client, wrong secret, or the "
    "client is not active.",
    "invalid_scope": "The requested scope is not allowed for this client.",
    "unauthorized_client": "This client may not use the client_credentials grant.",
}
