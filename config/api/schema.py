"""OpenAPI: every operation lists its scope, its rate-limit group and its error responses."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_object_type

ERROR_SCHEMA = build_object_type(
    properties={
        "status": {"type": "integer", "example": 400},
        "error": {"type": "string", "example": "Bad Request"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": build_object_type(
                properties={
                    "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"},
                }
            ),
        },
    },
    required=["status", "error", "message", "details"],
)

ERROR_DESCRIPTIONS = {
    "400": "Bad request: the body or a parameter is invalid",
    "401": "Unauthorized: missing, invalid or expired credentials",
    "403": "Forbidden: the token lacks the scope, or the operator is suspended",
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflict",
    "413": "Request body too large",
    "429": "Too many requests: see Retry-After and RateLimit-* headers",
    "500": "An unexpected internal error",
}


class TallyAutoSchema(AutoSchema):
    def get_description(self) -> str:
        description = super().get_description() or ""
        notes = []
        scope = self._required_scope()
        if scope:
            notes.append(f"Requires the scope `{scope}`.")
        group = self._rate_limit_group()
        if group:
            from django.conf import settings

            limits = settings.TALLY["RATE_LIMITS"][group]
            notes.append(
                f"Rate limit group `{group}`: {limits['rate']:g} requests per second, "
                f"burst {limits['burst']:g}."
            )
        return "\n\n".join(part for part in [description, *notes] if part)

    def get_auth(self):
        auth = super().get_auth()
        scope = self._required_scope()
        if scope:
            return [{"oauth2": [scope]}]
        return auth

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        statuses = ["400", "401", "404", "405", "413", "429", "500"]
        if self._required_scope():
            statuses.append("403")
        for status in statuses:
            responses.setdefault(
                status,
                {
                    "description": ERROR_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                },
            )
        return responses

    def _required_scope(self) -> str | None:
        scopes = getattr(self.view, "required_scopes", None) or {}
        action = getattr(self.view, "action", None)
        return scopes.get(action) or scopes.get(self.method.lower())

    def _rate_limit_group(self) -> str | None:
        group = getattr(self.view, "rate_limit_group", None)
        if isinstance(group, dict):
            action = getattr(self.view, "action", None)
            return group.get(action) or group.get(self.method.lower()) or group.get("default")
        return group


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    target_class = "config.api.authentication.OperatorTokenAuthentication"
    name = "oauth2"

    def get_security_definition(self, auto_schema):
        from tenants.scopes import SCOPES

        return {
            "type": "oauth2",
            "description": "OAuth2 client credentials: POST /oauth/token with client_id, "
            "client_secret, grant_type=client_credentials and audience.",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPES}},
        }


class PlatformKeyScheme(OpenApiAuthenticationExtension):
    target_class = "config.api.authentication.PlatformKeyAuthentication"
    name = "platformKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A platform API key (tly_platform_…), created by staff in the admin.",
        }
