"""Who may open the dashboards, and what they see: the rules of reporting.web.access,
through the pages as a browser reaches them."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, reverse

from reporting.web import platform_urls
from reporting.web import urls as dashboard_urls
from tenants.models import OperatorMembership
from tenants.services import operator_set_status
from tests.reporting.web.scene import member

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER


def every_page_path() -> list[str]:
    """Every URL of /dashboard/ and /platform/, arguments filled with a random id: new
    pages are covered here as soon as they are routed."""
    paths = []
    for module, namespace in ((dashboard_urls, "dashboard"), (platform_urls, "platform")):
        for pattern in module.urlpatterns:
            assert isinstance(pattern, URLPattern), f"{namespace}: include()s are not covered"
            arguments = {name: uuid.uuid4() for name in pattern.pattern.converters}
            paths.append(reverse(f"{namespace}:{pattern.name}", kwargs=arguments))
    return paths


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("path", [*every_page_path(), "/account/password/"])
def test_an_anonymous_visitor_is_sent_to_the_login_page(path, method):
    response = getattr(Client(), method)(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.django_db
def test_a_member_sees_their_operators_data_and_not_anothers(acme_scene, globex_scene, browser_as):
    bob = member("bob", (acme_scene.operator, ADMIN))

    page = browser_as(bob).get("/dashboard/").content.decode()

    assert "Acme" in page
    assert acme_scene.customer(0) in page  # a meter at 900 of 1,000
    assert "globex" not in page.lower()
    assert globex_scene.customer(0) not in page


@pytest.mark.django_db
def test_a_user_who_belongs_to_no_operator_is_told_so(browser_as):
    eve = member("eve")

    response = browser_as(eve).get("/dashboard/")

    assert response.status_code == 403
    assert "no operator has made you a member yet" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.urls("tests.reporting.web.urls_with_test_page")
def test_another_operators_object_is_a_404_for_reading_and_writing(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    ours = reverse("test-meter-page", kwargs={"pk": acme_scene.meters[0].pk})
    theirs = reverse("test-meter-page", kwargs={"pk": globex_scene.meters[0].pk})
    nobodys = reverse("test-meter-page", kwargs={"pk": uuid.uuid4()})

    assert bob.get(ours).status_code == 200
    for path in (theirs, nobodys):
        for method in (bob.get, bob.post):
            response = method(path)
            assert response.status_code == 404
            page = response.content.decode()
            assert 'id="not-found"' in page and "Acme" in page  # the dashboard's own page
            assert globex_scene.customer(0) not in page


@pytest.mark.django_db
@pytest.mark.urls("tests.reporting.web.urls_with_test_page")
def test_a_viewer_can_read_but_not_change_anything(acme_scene, browser_as):
    viewer = browser_as(member("vera", (acme_scene.operator, VIEWER)))
    admin = browser_as(member("adam", (acme_scene.operator, ADMIN)))
    meter_page = reverse("test-meter-page", kwargs={"pk": acme_scene.meters[0].pk})

    assert viewer.get(meter_page).status_code == 200
    for method in ("post", "put", "patch", "delete"):
        response = getattr(viewer, method)(meter_page)
        assert response.status_code == 403, method
        assert "read-only access to Acme" in response.content.decode()
    # Refused before the view: POST /dashboard/ is a 405 for an admin, a 403 for a viewer.
    assert viewer.post("/dashboard/").status_code == 403
    assert admin.post("/dashboard/").status_code == 405
    assert admin.post(meter_page).content.decode() == f"changed {acme_scene.meters[0].user_id}"


@pytest.mark.django_db
def test_a_user_of_two_operators_switches_between_them(acme_scene, globex_scene, browser_as):
    both = browser_as(member("both", (acme_scene.operator, ADMIN), (globex_scene.operator, VIEWER)))

    first = both.get("/dashboard/").content.decode()
    assert acme_scene.customer(0) in first  # the first membership by operator name
    assert 'id="operator-switcher"' in first

    # A viewer of Globex may switch to it: only the session changes.
    response = both.post("/dashboard/operator/", {"operator": str(globex_scene.operator.pk)})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    page = both.get("/dashboard/").content.decode()
    assert "You are now looking at Globex." in page
    assert globex_scene.customer(0) in page
    assert acme_scene.customer(0) not in page

    # The choice lasts for the session, and switching back works.
    assert globex_scene.customer(0) in both.get("/dashboard/").content.decode()
    both.post("/dashboard/operator/", {"operator": str(acme_scene.operator.pk)})
    assert acme_scene.customer(0) in both.get("/dashboard/").content.decode()


@pytest.mark.django_db
def test_switching_to_an_operator_one_is_not_a_member_of_is_a_404(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    for chosen in (str(globex_scene.operator.pk), str(uuid.uuid4()), "not-an-id", ""):
        response = bob.post("/dashboard/operator/", {"operator": chosen})
        assert response.status_code == 404, chosen
    page = bob.get("/dashboard/").content.decode()
    assert acme_scene.customer(0) in page
    assert globex_scene.customer(0) not in page
    assert bob.get("/dashboard/operator/").status_code == 405


@pytest.mark.django_db
def test_a_removed_membership_stops_counting_at_the_next_request(
    acme_scene, globex_scene, browser_as
):
    user = member("both", (acme_scene.operator, ADMIN), (globex_scene.operator, ADMIN))
    both = browser_as(user)
    both.post("/dashboard/operator/", {"operator": str(globex_scene.operator.pk)})

    OperatorMembership.objects.filter(user=user, operator=globex_scene.operator).delete()

    page = both.get("/dashboard/").content.decode()
    assert acme_scene.customer(0) in page
    assert globex_scene.customer(0) not in page


@pytest.mark.django_db
def test_the_platform_dashboard_is_for_staff_only(acme_scene, browser_as):
    operator_user = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    staff = browser_as(member("alice", staff=True))

    refused = operator_user.get("/platform/")
    assert refused.status_code == 404
    assert "Platform" not in refused.content.decode()

    response = staff.get("/platform/")
    assert response.status_code == 200
    assert "<title> Platform overview · Tally</title>" in response.content.decode()


@pytest.mark.django_db
def test_every_navigation_entry_leads_to_a_page(acme_scene, browser_as):
    staff_member = browser_as(member("alice", (acme_scene.operator, ADMIN), staff=True))

    for start in ("/dashboard/", "/platform/"):
        page = staff_member.get(start).content.decode()
        navigation = page.split('id="nav-entries"', 1)[1].split("</ol>", 1)[0]
        links = [part.split('"', 1)[0] for part in navigation.split('href="')[1:]]
        assert start in links
        for link in links:
            assert staff_member.get(link).status_code == 200, link


@pytest.mark.django_db
def test_the_people_of_a_suspended_operator_still_read_their_dashboard_and_are_told(
    acme_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, VIEWER)))
    assert "This operator is suspended" not in bob.get("/dashboard/").content.decode()

    operator_set_status(operator=acme_scene.operator, status="suspended")

    response = bob.get("/dashboard/")
    assert response.status_code == 200
    assert "This operator is suspended" in response.content.decode()
