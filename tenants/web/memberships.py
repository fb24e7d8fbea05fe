"""Which operator a signed-in user is looking at.

A user sees the operators they are a member of (`OperatorMembership`). The one chosen
is kept in the session; without a valid choice it is the first membership by operator
name. A membership removed while the user is signed in stops counting at the next
request (the list is read on every page).
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from tenants.models import OperatorMembership

SESSION_KEY = "tally_operator_id"


def memberships_of(user) -> list[OperatorMembership]:
    """The user's memberships with their operators, in the order the switcher lists them."""
    if not user.is_authenticated:
        return []
    return list(
        OperatorMembership.objects.filter(user=user)
        .select_related("operator")
        .order_by("operator__name", "operator_id")
    )


def membership_current(
    request: HttpRequest, memberships: list[OperatorMembership]
) -> OperatorMembership | None:
    """The membership chosen in this session, else the first one."""
    chosen = request.session.get(SESSION_KEY)
    for membership in memberships:
        if str(membership.operator_id) == chosen:
            return membership
    return memberships[0] if memberships else None


def membership_choose(
    request: HttpRequest, memberships: list[OperatorMembership], operator_id: str
) -> OperatorMembership | None:
    """Keep `operator_id` as this session's operator if the user is a member of it;
    None (and no change) otherwise."""
    for membership in memberships:
        if str(membership.operator_id) == operator_id:
            request.session[SESSION_KEY] = str(membership.operator_id)
            return membership
    return None


def home_url(user) -> str:
    """Where a signed-in user starts: their operator's dashboard, else (staff without a
    membership) the platform dashboard. A user with neither lands on the dashboard,
    which says they have no operator yet."""
    if user.is_staff and not OperatorMembership.objects.filter(user=user).exists():
        return reverse("platform:overview")
    return reverse("dashboard:overview")
