"""OpenAPI: every operation lists its scope, its rate-limit group and its error responses."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_object_type

from common.api.pagination import list_key_for

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
    "409": "Conflict: a uniqueness rule, a quota, or a request still in progress",
    "415": "Unsupported media type: send application/json",
    "422": "Unprocessable: the Idempotency-Key was used with another body",
    "503": "Service unavailable: nothing was stored; retry",
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
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            statuses += ["409", "415"]
        statuses += getattr(self.view, "extra_error_statuses", [])
        for status in statuses:
            responses.setdefault(
                status,
                {
                    "description": ERROR_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                },
            )
        return responses

    def _get_paginator(self):
        paginator = super()._get_paginator()
        if paginator is not None:
            # Each list names its array ("meterTypes", "parameters", …).
            paginator.list_key = list_key_for(self.view)
        return paginator

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


def patch_bodies_need_a_field(result, generator, request, public):
    """drf-spectacular postprocessing hook: a PATCH body must change something (an empty
    one is a 400), so its schema asks for at least one property."""
    schemas = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        body = operations.get("patch", {}).get("requestBody", {})
        for content in body.get("content", {}).values():
            reference = content.get("schema", {}).get("$ref", "")
            name = reference.rsplit("/", 1)[-1]
            if name in schemas:
                schemas[name]["minProperties"] = 1
    return result


def query_parameters_as_served(result, generator, request, public):
    """drf-spectacular postprocessing hook: say what every list does with its query
    parameters. An empty value counts as absent (`?meterTypeId=` filters nothing), and a
    NUL in a string value is a 400 (PostgreSQL text cannot hold one)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") != "query":
                    continue
                parameter["allowEmptyValue"] = True
                schema = parameter.get("schema", {})
                if schema.get("type") == "string":
                    schema.setdefault("pattern", "^[^\\u0000]*$")
    return result
