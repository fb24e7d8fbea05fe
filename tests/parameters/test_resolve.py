"""Reading values for stream nodes: parameter_resolve and {{param:…}} substitution."""

from __future__ import annotations

import pytest

from parameters.services import (
    ParameterNotFound,
    parameter_create,
    parameter_resolve,
    parameters_substitute,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def values(acme):
    parameter_create(
        operator=acme.operator, name="api/url", type="standard", value="https://x.test"
    )
    parameter_create(operator=acme.operator, name="api/key", type="sensitive", value="k-123")
    return acme


def test_resolve_returns_decrypted_values(values):
    assert parameter_resolve(values.operator, "api/url") == "https://x.test"
    assert parameter_resolve(values.operator, "api/key") == "k-123"


def test_resolve_of_a_missing_name_raises_clearly(values):
    with pytest.raises(ParameterNotFound, match="'api/nope'"):
        parameter_resolve(values.operator, "api/nope")


def test_resolve_never_reads_another_operators_parameter(values, globex):
    with pytest.raises(ParameterNotFound):
        parameter_resolve(globex.operator, "api/key")


def test_substitute_replaces_references_anywhere_in_values(values, django_assert_num_queries):
    config = {
        "url": "{{param:api/url}}/v1/events",
        "headers": {"Authorization": "Bearer {{param:api/key}}", "{{param:api/key}}": "keys stay"},
        "retries": 3,
        "list": ["{{param:api/url}}", {"deep": ["{{param:api/key}}"]}, None, True],
    }
    with django_assert_num_queries(1):
        resolved = parameters_substitute(values.operator, config)
    assert resolved == {
        "url": "https://x.test/v1/events",
        "headers": {"Authorization": "Bearer k-123", "{{param:api/key}}": "keys stay"},
        "retries": 3,
        "list": ["https://x.test", {"deep": ["k-123"]}, None, True],
    }
    assert config["url"] == "{{param:api/url}}/v1/events"  # the input is not changed


def test_substitute_without_references_reads_nothing(values, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert parameters_substitute(values.operator, {"a": "{{not a ref}}"}) == {
            "a": "{{not a ref}}"
        }


def test_substitute_names_the_first_missing_parameter(values):
    with pytest.raises(ParameterNotFound) as raised:
        parameters_substitute(values.operator, {"a": "{{param:api/url}} {{param:zz/missing}}"})
    assert raised.value.name == "zz/missing"
