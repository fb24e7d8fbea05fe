"""Access rules: an operator's token needs the endpoint's scope; the platform API needs a key.

A view names its scopes in `required_scopes`: a dict from action (list, retrieve, create,
partial_update, destroy, or a custom action) or lower-case HTTP method to the scope.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from tenants.api.authentication import ApiClient, PlatformPrincipal
from tenants.scopes import scope_granted


def required_scope_for(request, view) -> str | None:
    """The scope this request needs; None for OPTIONS, which only describes the endpoint
    (any valid token may ask)."""
    if request.method == "OPTIONS":
        return None
    scopes: dict[str, str] = getattr(view, "required_scopes", None) or {}
    action = getattr(view, "action", None)
    scope = scopes.get(action) if action else None
    scope = scope or scopes.get(request.method.lower())
    if scope is None and request.method == "HEAD":
        scope = scopes.get("get") or scopes.get("list") or scopes.get("retrieve")
    if scope is None:
        raise ImproperlyConfigured(
            f"{type(view).__name__} names no required scope for {action or request.method}."
        )
    return scope


class OperatorScopePermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, ApiClient):
            return False
        if not principal.operator.is_active:
            raise exceptions.PermissionDenied("This operator is suspended.")
        if not hasattr(view, request.method.lower()):
            # DRF checks permissions before it looks for the handler; answer 405, not a
            # missing-scope error, for a method the view does not have.
            raise exceptions.MethodNotAllowed(request.method)
        scope = required_scope_for(request, view)
        if scope is not None and not scope_granted(scope, principal.scopes):
            raise exceptions.PermissionDenied(f"This endpoint requires the scope {scope}.")
        return True


class PlatformKeyPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, PlatformPrincipal)
