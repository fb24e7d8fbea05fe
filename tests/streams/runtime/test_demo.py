"""The demo a first run loads: a print job sent to the printed collector, as README
shows, moves the customer's meter and no other."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from common.json import loads
from tests.conftest import ApiClient, issue_token
from tests.streams.runtime.helpers import (
    ingest,
    meter_values,
    process_all,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def test_the_demo_stream_meters_what_the_readme_sends():
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    printed = loads(out.getvalue())
    streams = printed["demo"]["streams"]
    application = printed["application"]
    token = issue_token(Client(), application["clientId"], application["clientSecret"])
    client = ApiClient(token["access_token"])
    collector_id = streams["collector"]["id"]
    before = meter_values(client, streams["meterKey"])
    ingest(
        client,
        collector_id,
        [
            {"id": "job-1", "customerId": "carol@example.com", "printer": "printer-1", "pages": 12},
            {"id": "job-2", "customerId": "carol@example.com", "printer": "printer-2", "pages": 3},
        ],
    )
    assert process_all(collector_id) == 2
    after = meter_values(client, streams["meterKey"])
    assert after == {**before, "carol@example.com": before["carol@example.com"] + 15}
    assert set(after) == set(streams["meters"])
