"""Billable units keep every digit, in the lines and in the totals."""

from __future__ import annotations

import datetime
from decimal import Decimal, localcontext

import pytest

from reporting import platform as platform_figures
from tenants.services import usage_counter_add
from tests.reporting.platform_helpers import REPORT, fold
from tests.reporting.test_platform_report import line, set_weights

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def test_the_total_of_billable_units_keeps_every_digit(platform, acme):
    set_weights(
        platform,
        {
            "apiCallWeight": Decimal("1.0000000001"),
            "gatewayRequestWeight": 0,
            "eventWeight": 0,
            "storageGbWeight": Decimal("0.0000000001"),
        },
    )
    moment = datetime.datetime(2026, 3, 2, 12, tzinfo=datetime.UTC)
    usage_counter_add(
        operator_id=acme.operator.pk, kind="api_call", key="metrics", count=10**9, at=moment
    )
    usage_counter_add(operator_id=acme.operator.pk, kind="event", key="print", at=moment)
    fold()

    body = platform.get(REPORT, {"start": "2026-03-01", "end": "2026-03-31"}).json(
        parse_float=Decimal
    )

    with localcontext(prec=100):
        exact = Decimal(10**9) * Decimal("1.0000000001") + Decimal(
            platform_figures.storage_bytes_per_record()
        ).scaleb(-9) * Decimal("0.0000000001")
    assert len(exact.as_tuple().digits) == 29
    assert line(body, acme)["billableUnits"] == exact
    assert body["totals"]["billableUnits"] == exact  # the sum of that one line
