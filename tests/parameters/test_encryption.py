"""Sensitive values at rest: encryption, key ids, rotation, corruption."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection

from common.json import loads
from parameters.crypto import ParameterDecryptionError, build_keyring, key_id_for
from parameters.models import Parameter
from parameters.services import parameter_create, parameter_resolve, parameter_update
from tests.conftest import OLD_PARAMETER_KEY, SENSITIVE_SENTINEL, TEST_PARAMETER_KEY

pytestmark = pytest.mark.django_db

SECRET = f"pw-{SENSITIVE_SENTINEL}-1"


def stored_columns(parameter: Parameter) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT plain_value || '|' || encrypted_value || '|' || key_id "
            "FROM parameters_parameter WHERE id = %s",
            [parameter.pk],
        )
        return cursor.fetchone()[0]


def test_sensitive_value_is_stored_as_ciphertext_naming_its_key(acme):
    parameter = parameter_create(
        operator=acme.operator, name="db/password", type="sensitive", value=SECRET
    )
    raw = stored_columns(parameter)
    assert SECRET not in raw
    assert parameter.key_id == key_id_for(TEST_PARAMETER_KEY)
    assert parameter.plain_value == ""
    assert parameter_resolve(acme.operator, "db/password") == SECRET


def test_standard_value_is_stored_as_written(acme):
    parameter = parameter_create(operator=acme.operator, name="region", type="standard", value="eu")
    assert stored_columns(parameter) == "eu||"


def test_same_value_encrypts_differently_each_time(acme):
    first = parameter_create(operator=acme.operator, name="a", type="sensitive", value=SECRET)
    second = parameter_create(operator=acme.operator, name="b", type="sensitive", value=SECRET)
    assert first.encrypted_value != second.encrypted_value


def test_rotation_with_two_keys_then_removing_the_old_one(acme, settings):
    settings.TALLY["PARAMETER_KEYS"] = [OLD_PARAMETER_KEY]
    names = [f"secret/{index}" for index in range(5)]
    for name in names:
        parameter_create(
            operator=acme.operator, name=name, type="sensitive", value=f"{SECRET}{name}"
        )
    parameter_create(operator=acme.operator, name="plain", type="standard", value="p")

    # A new key goes first; old values still decrypt through the second.
    settings.TALLY["PARAMETER_KEYS"] = [TEST_PARAMETER_KEY, OLD_PARAMETER_KEY]
    assert parameter_resolve(acme.operator, names[0]) == f"{SECRET}{names[0]}"
    # A value written now uses the new key.
    parameter_update(parameter=Parameter.objects.get(name=names[0]), value=f"{SECRET}{names[0]}")

    out = io.StringIO()
    call_command("rotate_parameter_keys", stdout=out)
    assert loads(out.getvalue()) == {"rotated": 4}
    out = io.StringIO()
    call_command("rotate_parameter_keys", stdout=out)
    assert loads(out.getvalue()) == {"rotated": 0}

    settings.TALLY["PARAMETER_KEYS"] = [TEST_PARAMETER_KEY]
    for name in names:
        assert parameter_resolve(acme.operator, name) == f"{SECRET}{name}"
    assert set(Parameter.objects.filter(type="sensitive").values_list("key_id", flat=True)) == {
        key_id_for(TEST_PARAMETER_KEY)
    }


def test_value_under_a_removed_key_raises_naming_the_key(acme, settings):
    settings.TALLY["PARAMETER_KEYS"] = [OLD_PARAMETER_KEY]
    parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    settings.TALLY["PARAMETER_KEYS"] = [TEST_PARAMETER_KEY]
    with pytest.raises(ParameterDecryptionError, match=key_id_for(OLD_PARAMETER_KEY)):
        parameter_resolve(acme.operator, "s")


def test_corrupted_ciphertext_raises_and_is_never_returned(acme):
    parameter = parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    token = parameter.encrypted_value
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    Parameter.objects.filter(pk=parameter.pk).update(encrypted_value=tampered)
    with pytest.raises(ParameterDecryptionError, match="corrupted"):
        parameter_resolve(acme.operator, "s")


def test_rotation_stops_loudly_on_a_corrupted_value(acme, settings):
    settings.TALLY["PARAMETER_KEYS"] = [OLD_PARAMETER_KEY]
    parameter = parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    Parameter.objects.filter(pk=parameter.pk).update(encrypted_value="garbage")
    settings.TALLY["PARAMETER_KEYS"] = [TEST_PARAMETER_KEY, OLD_PARAMETER_KEY]
    with pytest.raises(CommandError, match="corrupted"):
        call_command("rotate_parameter_keys", stdout=io.StringIO())


def test_sensitive_reads_through_the_api_are_masked_even_when_undecryptable(
    acme, api_client, settings
):
    parameter_create(operator=acme.operator, name="s", type="sensitive", value=SECRET)
    settings.TALLY["PARAMETER_KEYS"] = [OLD_PARAMETER_KEY]
    response = api_client(acme.token).get("/global-parameters/v1/parameters/s")
    assert response.status_code == 200
    assert response.json()["value"] == "********"


@pytest.mark.parametrize("keys", [[], ["not-a-key"], [TEST_PARAMETER_KEY, "short"]])
def test_bad_key_configuration_fails_loudly(keys):
    with pytest.raises(ImproperlyConfigured):
        build_keyring(keys)


def test_no_sensitive_value_reaches_the_logs(acme, api_client, settings, caplog):
    """Drive every path a sensitive value takes, with DEBUG logging, and read the logs."""
    settings.TALLY["RATE_LIMITS"]["parameters"] = {"rate": 1000, "burst": 1000}
    caplog.set_level(logging.DEBUG)
    client = api_client(acme.token)
    base = "/global-parameters/v1/parameters"
    client.post(base, {"name": "s", "type": "sensitive", "value": SECRET})
    client.post(base, {"name": "s", "type": "sensitive", "value": SECRET})  # 409
    client.post(base, {"name": "bad name", "type": "sensitive", "value": SECRET})  # 400
    client.patch(f"{base}/s", {"value": SECRET + "2"})
    client.patch(f"{base}/s", {"value": SECRET, "type": "standard"})  # 400
    client.get(f"{base}/s")
    client.get(base)
    client.delete(base, {"parameters": ["s"]})
    assert caplog.records, "the requests should have logged something"
    assert SENSITIVE_SENTINEL not in caplog.text


def test_a_malformed_key_stops_start_up_naming_it():
    import os
    import subprocess
    import sys

    environment = {**os.environ, "TALLY_PARAMETER_KEYS": f"{TEST_PARAMETER_KEY},not-a-key"}
    finished = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode != 0
    assert "TALLY_PARAMETER_KEYS key #2 is not a valid Fernet key" in finished.stderr
