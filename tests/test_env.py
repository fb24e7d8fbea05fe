"""config/env.py: typed environment readers that fail loudly on values they cannot read."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_json, env_list, env_str

NAME = "TALLY_TEST_ENV_VALUE"


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)


def test_env_str_required_and_missing_raises():
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_str(NAME)


def test_env_str_returns_the_value_or_the_default(monkeypatch):
    assert env_str(NAME, "fallback") == "fallback"
    monkeypatch.setenv(NAME, "value")
    assert env_str(NAME) == "value"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" Yes ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("No", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, not expected) is expected


def test_env_bool_missing_uses_the_default():
    assert env_bool(NAME, True) is True
    assert env_bool(NAME, False) is False


def test_env_bool_rejects_anything_else(monkeypatch):
    monkeypatch.setenv(NAME, "maybe")
    with pytest.raises(ImproperlyConfigured, match="maybe"):
        env_bool(NAME)


def test_env_int_reads_integers(monkeypatch):
    assert env_int(NAME, 7) == 7
    monkeypatch.setenv(NAME, "42")
    assert env_int(NAME, 7) == 42


def test_env_int_rejects_words(monkeypatch):
    monkeypatch.setenv(NAME, "ten")
    with pytest.raises(ImproperlyConfigured, match="ten"):
        env_int(NAME, 10)


def test_env_list_splits_on_commas_and_trims(monkeypatch):
    monkeypatch.setenv(NAME, " a.example , b.example,,c.example ")
    assert env_list(NAME) == ["a.example", "b.example", "c.example"]


def test_env_list_missing_uses_a_copy_of_the_default():
    default = ["localhost"]
    result = env_list(NAME, default)
    assert result == ["localhost"]
    assert result is not default


def test_env_json_parses_json(monkeypatch):
    assert env_json(NAME) is None
    monkeypatch.setenv(NAME, '{"token": {"rate": 1}}')
    assert env_json(NAME) == {"token": {"rate": 1}}


def test_env_json_rejects_invalid_json(monkeypatch):
    monkeypatch.setenv(NAME, "{not json")
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_json(NAME)


@pytest.mark.parametrize("hours", ["0", "8785", "99999999999"])
def test_usage_redis_hours_out_of_range_stops_start_up(hours):
    environment = {**os.environ, "TALLY_USAGE_REDIS_HOURS": hours}
    finished = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode != 0
    assert "TALLY_USAGE_REDIS_HOURS must be from 1 to 8784" in finished.stderr
