"""The parameter admin: validates like the API and never shows a sensitive value."""

from __future__ import annotations

import pytest

from parameters.models import MASK, Parameter
from parameters.services import parameter_create, parameter_resolve
from tests.conftest import SENSITIVE_SENTINEL

pytestmark = pytest.mark.django_db

SECRET = f"admin-{SENSITIVE_SENTINEL}"


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def test_changelist_masks_sensitive_values_and_searches(staff, acme):
    parameter_create(operator=acme.operator, name="s/key", type="sensitive", value=SECRET)
    parameter_create(operator=acme.operator, name="region", type="standard", value="eu-west")
    page = staff.get("/admin/parameters/parameter/").content.decode()
    assert SECRET not in page and MASK in page and "eu-west" in page
    found = staff.get("/admin/parameters/parameter/", {"q": "s/key"}).content.decode()
    assert "s/key" in found and "region" not in found


def test_change_form_never_renders_the_sensitive_value(staff, acme):
    parameter = parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    page = staff.get(f"/admin/parameters/parameter/{parameter.pk}/change/").content.decode()
    assert SECRET not in page
    assert parameter.encrypted_value not in page


def test_add_form_creates_an_encrypted_parameter(staff, acme):
    response = staff.post(
        "/admin/parameters/parameter/add/",
        {
            "operator": acme.operator.pk,
            "name": "a/b",
            "type": "sensitive",
            "value": SECRET,
            "description": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    parameter = Parameter.objects.get(name="a/b")
    assert parameter.plain_value == "" and SECRET not in parameter.encrypted_value
    assert parameter_resolve(acme.operator, "a/b") == SECRET


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"name": "bad name"}, "May contain only"),
        ({"name": "/".join("x" * 11)}, "at most 10"),
        ({"value": ""}, "required"),
        ({"value": "v" * 8193}, "8192"),
    ],
)
def test_add_form_validates_like_the_api(staff, acme, fields, error):
    data = {
        "operator": acme.operator.pk,
        "name": "ok",
        "type": "standard",
        "value": "v",
        "description": "",
    }
    data.update(fields)
    response = staff.post("/admin/parameters/parameter/add/", data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Parameter.objects.exists()


def test_add_form_refuses_a_duplicate_name(staff, acme):
    parameter_create(operator=acme.operator, name="dup", type="standard", value="v")
    response = staff.post(
        "/admin/parameters/parameter/add/",
        {
            "operator": acme.operator.pk,
            "name": "dup",
            "type": "standard",
            "value": "w",
            "description": "",
        },
    )
    assert response.status_code == 200
    assert Parameter.objects.filter(name="dup").count() == 1


def test_editing_a_sensitive_parameter_with_an_empty_value_keeps_it(staff, acme):
    parameter = parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    response = staff.post(
        f"/admin/parameters/parameter/{parameter.pk}/change/",
        {"value": "", "description": "rotated label"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    parameter.refresh_from_db()
    assert parameter.description == "rotated label"
    assert parameter_resolve(acme.operator, "s") == SECRET


def test_editing_a_standard_value(staff, acme):
    parameter = parameter_create(operator=acme.operator, name="r", type="standard", value="eu")
    staff.post(
        f"/admin/parameters/parameter/{parameter.pk}/change/", {"value": "us", "description": ""}
    )
    assert parameter_resolve(acme.operator, "r") == "us"


def test_a_conflict_found_while_saving_is_a_form_error(staff, acme, monkeypatch):
    """The form passed, then another admin took the last free place before the save: the
    service's refusal shows on the form and nothing is stored."""
    from parameters import services
    from parameters.rules import MAX_PARAMETERS_PER_OPERATOR

    for index in range(MAX_PARAMETERS_PER_OPERATOR - 1):
        parameter_create(operator=acme.operator, name=f"p{index}", type="standard", value="v")
    real_create = services.parameter_create

    def create_after_a_concurrent_one(**fields):
        real_create(operator=acme.operator, name="concurrent", type="standard", value="v")
        return real_create(**fields)

    monkeypatch.setattr(services, "parameter_create", create_after_a_concurrent_one)
    response = staff.post(
        "/admin/parameters/parameter/add/",
        {"operator": acme.operator.pk, "name": "mine", "type": "standard", "value": "x"},
    )

    assert response.status_code == 200
    assert f"at most {MAX_PARAMETERS_PER_OPERATOR} parameters" in response.content.decode()
    assert 'value="mine"' in response.content.decode()
    names = set(Parameter.objects.filter(operator=acme.operator).values_list("name", flat=True))
    assert "mine" not in names and "concurrent" not in names  # the whole save rolled back
