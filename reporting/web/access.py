"""Who may open a dashboard page, and whose data it shows: the one gate every page of
`/dashboard/` and `/platform/` goes through.

Operator pages (`operator_page`, `OperatorPageMixin`):

* anonymous visitors are sent to `/login/?next=<the page>`;
* a signed-in user who is a member of no operator gets a page saying so (403);
* otherwise `request.membership` is the session's membership (see
  `tenants.web.memberships`) and `request.operator` its operator;
* a `viewer` may only read: any other method than GET, HEAD or OPTIONS is a 403, unless
  the view says viewers may post (`viewer_may_post`: only for what changes the
  viewer's own session, like switching operator);
* an object of another operator is a 404: look objects up with `operator_object_or_404`
  (or filter by `request.operator` yourself); a 404 raised by the view is answered
  with the dashboard's own not-found page.

Platform pages (`staff_page`, `StaffPageMixin`): anonymous visitors are sent to the login
page; signed-in users who are not staff get a 404, so the platform's pages do not show
that they exist; staff may do everything (the admin is theirs too).

CSRF protection is Django's (the middleware): never exempt a dashboard view.
"""

from __future__ import annotations

import functools

from django.contrib.auth.views import redirect_to_login
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from reporting.web.shell import DASHBOARD, PLATFORM, shell_render
from tenants.models import OperatorMembership
from tenants.web.look import look_context
from tenants.web.memberships import membership_current, memberships_of

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def _admit_member(request: HttpRequest, *, viewer_may_post: bool) -> HttpResponse | None:
    """None when the request may go on (with `request.operator` and `request.membership`
    set), else the answer that refuses it."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    memberships = memberships_of(request.user)
    membership = membership_current(request, memberships)
    if membership is None:
        return render(
            request,
            "dashboard/no_operator.html",
            {**look_context(request), "title": "No operator yet"},
            status=403,
        )
    request.memberships = memberships
    request.membership = membership
    request.operator = membership.operator
    writes = request.method not in READ_METHODS and not viewer_may_post
    if writes and membership.role != OperatorMembership.Role.ADMIN:
        return shell_render(
            request,
            DASHBOARD,
            "dashboard/forbidden.html",
            {"title": "Read-only access"},
            status=403,
        )
    return None


def _admit_staff(request: HttpRequest) -> HttpResponse | None:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not (request.user.is_active and request.user.is_staff):
        return render(
            request,
            "dashboard/not_found_plain.html",
            {**look_context(request), "title": "Page not found"},
            status=404,
        )
    request.memberships = memberships_of(request.user)
    return None


def _not_found(request: HttpRequest, shell: str) -> HttpResponse:
    template = f"{shell}/not_found.html"
    return shell_render(request, shell, template, {"title": "Page not found"}, status=404)


def operator_page(view=None, *, viewer_may_post: bool = False):
    """Decorate a function view of `/dashboard/` (see the module docstring):
    `@operator_page` or `@operator_page(viewer_may_post=True)`."""

    def decorate(view_function):
        @functools.wraps(view_function)
        def wrapper(request, *args, **kwargs):
            refused = _admit_member(request, viewer_may_post=viewer_may_post)
            if refused is not None:
                return refused
            try:
                return view_function(request, *args, **kwargs)
            except Http404:
                return _not_found(request, DASHBOARD)

        return wrapper

    return decorate(view) if view is not None else decorate


def staff_page(view_function):
    """Decorate a function view of `/platform/` (see the module docstring)."""

    @functools.wraps(view_function)
    def wrapper(request, *args, **kwargs):
        refused = _admit_staff(request)
        if refused is not None:
            return refused
        try:
            return view_function(request, *args, **kwargs)
        except Http404:
            return _not_found(request, PLATFORM)

    return wrapper


class OperatorPageMixin:
    """`operator_page` for class-based views; set `viewer_may_post = True` where viewers
    may post."""

    viewer_may_post = False

    def dispatch(self, request, *args, **kwargs):
        refused = _admit_member(request, viewer_may_post=self.viewer_may_post)
        if refused is not None:
            return refused
        try:
            return super().dispatch(request, *args, **kwargs)
        except Http404:
            return _not_found(request, DASHBOARD)


class StaffPageMixin:
    """`staff_page` for class-based views."""

    def dispatch(self, request, *args, **kwargs):
        refused = _admit_staff(request)
        if refused is not None:
            return refused
        try:
            return super().dispatch(request, *args, **kwargs)
        except Http404:
            return _not_found(request, PLATFORM)


def operator_object_or_404(request: HttpRequest, model_or_queryset, **lookup) -> Model:
    """The object of the request's operator matching `lookup`; another operator's (or
    none) is a 404."""
    queryset = (
        model_or_queryset
        if isinstance(model_or_queryset, QuerySet)
        else model_or_queryset._default_manager.all()
    )
    return get_object_or_404(queryset.filter(operator=request.operator), **lookup)
