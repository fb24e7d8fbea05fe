"""OpenAPI for what tenants owns: the two credential schemes and the token endpoint."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_object_type

from common.api.schema import ERROR_DESCRIPTIONS, ERROR_SCHEMA
from tenants.scopes import SCOPES


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.api.authentication.OperatorTokenAuthentication"
    name = "oauth2"

    def get_security_definition(self, auto_schema):
        return {
            "type": "oauth2",
            "description": "OAuth2 client credentials: POST /oauth/token with client_id, "
            "client_secret, grant_type=client_credentials and audience.",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPES}},
        }


class PlatformKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.api.authentication.PlatformKeyAuthentication"
    name = "platformKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A platform API key (tly_platform_…), created by staff in the admin.",
        }


# `POST /oauth/token` is a plain Django view (the OAuth exchange is django-oauth-toolkit's),
# so the generator cannot see it; this hook describes it by hand.

OAUTH_ERROR_CODES = {
    "400": ["invalid_request", "unsupported_grant_type", "invalid_scope", "unauthorized_client"],
    "401": ["invalid_client"],
    "429": ["slow_down"],
}


def _oauth_error_schema(codes: list[str]) -> dict:
    return build_object_type(
        properties={
            "status": {"type": "integer"},
            "error": {
                "type": "string",
                "enum": codes,
                "description": "The OAuth2 error code (RFC 6749 §5.2).",
            },
            "error_description": {"type": "string"},
            "message": {"type": "string", "description": "The same as error_description."},
            "details": ERROR_SCHEMA["properties"]["details"],
        },
        required=["status", "error", "error_description", "message", "details"],
    )


def _token_operation() -> dict:
    from django.conf import settings

    limits = settings.TALLY["RATE_LIMITS"]["token"]
    request_schema = build_object_type(
        properties={
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "audience": {
                "type": "string",
                "description": "Must equal the API's configured audience (TALLY_API_AUDIENCE).",
                "example": settings.TALLY["API_AUDIENCE"],
            },
            "scope": {
                "type": "string",
                "description": "Space-separated scopes; default: all the application's scopes.",
            },
        },
        required=["grant_type", "client_id", "client_secret", "audience"],
    )
    rate_limit_headers = {
        name: {"schema": {"type": "integer"}, "description": description}
        for name, description in [
            ("Retry-After", "Seconds until a token request will be accepted."),
            ("RateLimit-Limit", "The bucket size (burst)."),
            ("RateLimit-Remaining", "Requests left in the bucket."),
            ("RateLimit-Reset", "Seconds until the bucket is full again."),
        ]
    }

    def error(status: str, description: str, headers: dict | None = None) -> dict:
        response = {
            "description": description,
            "content": {
                "application/json": {"schema": _oauth_error_schema(OAUTH_ERROR_CODES[status])}
            },
        }
        if headers:
            response["headers"] = headers
        return response

    return {
        "operationId": "oauth_token",
        "summary": "Get an access token (OAuth2 client credentials)",
        "description": (
            "Exchange an application's client id and secret for a bearer token. The body is "
            "JSON or form-encoded; the client credentials may instead come in an HTTP Basic "
            "Authorization header.\n\n"
            f"Rate limit group `token`, per client id: {limits['rate']:g} requests per "
            f"second, burst {limits['burst']:g}."
        ),
        "tags": ["oauth"],
        "security": [],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": request_schema},
                "application/x-www-form-urlencoded": {"schema": request_schema},
            },
        },
        "responses": {
            "200": {
                "description": "The access token.",
                "content": {
                    "application/json": {
                        "schema": build_object_type(
                            properties={
                                "access_token": {"type": "string"},
                                "expires_in": {"type": "integer", "example": 3600},
                                "scope": {
                                    "type": "string",
                                    "description": "The token's scopes, space-separated.",
                                },
                                "token_type": {"type": "string", "enum": ["Bearer"]},
                            },
                            required=["access_token", "expires_in", "scope", "token_type"],
                        )
                    }
                },
            },
            "400": error(
                "400",
                "The request is malformed, the grant type or audience is "
                "wrong, or a scope is not allowed.",
            ),
            "401": error(
                "401",
                "Client authentication failed: unknown client, wrong secret, or a "
                "suspended operator.",
                {"WWW-Authenticate": {"schema": {"type": "string"}}},
            ),
            "413": {
                "description": ERROR_DESCRIPTIONS["413"],
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            },
            "429": error("429", "Too many token requests.", rate_limit_headers),
        },
    }


# The reference product's clients fetch tokens from the second path; both are one view.
TOKEN_PATHS = {
    "/oauth/token": "oauth_token",
    "/authentication/v1/oauth/token": "authentication_oauth_token",
}


def add_token_endpoint(result, generator, request, public):
    """drf-spectacular postprocessing hook: add the token endpoint, at both its paths."""
    paths = result.setdefault("paths", {})
    for path, operation_id in TOKEN_PATHS.items():
        paths[path] = {"post": {**_token_operation(), "operationId": operation_id}}
    return result
