"""The admin helpers every app's admin uses: exact numbers and the big-table paginator."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.admin import LargeTablePaginator, exact_number, trim_rendered_decimal
from tenants.models import Operator
from tenants.services import operator_create


@pytest.mark.parametrize(
    "stored, shown",
    [
        (Decimal("4068.0000000000"), "4068"),
        (Decimal("0.5000000000"), "0.5"),
        (Decimal("1000.0000000000"), "1000"),  # not 1E+3
        (Decimal("-2.2500000000"), "-2.25"),
        (Decimal("0E-10"), "0"),
    ],
)
def test_decimals_are_shown_exactly_without_trailing_zeros(stored, shown):
    assert str(exact_number(stored)) == shown


def test_other_values_are_left_as_they_are():
    assert exact_number(None) is None
    assert exact_number(7) == 7
    assert exact_number("4068.0000000000") == "4068.0000000000"


@pytest.mark.parametrize(
    "rendered, shown",
    [("4068.0000000000", "4068"), ("0.5000000000", "0.5"), ("-", "-"), ("12", "12")],
)
def test_read_only_decimals_are_trimmed_as_rendered(rendered, shown):
    assert trim_rendered_decimal(rendered) == shown


@pytest.fixture
def operators(db):
    for n in range(12):
        operator_create(name=f"Operator {n:02}")
    return Operator.objects.order_by("name")


def test_a_table_below_the_limit_is_counted_exactly(operators):
    paginator = LargeTablePaginator(operators, per_page=5)
    paginator.exact_limit = 100

    assert paginator.count == 12
    assert not paginator.is_estimate
    assert paginator.num_pages == 3


def test_above_the_limit_the_count_stops_at_the_limit_and_asks_the_planner(operators):
    paginator = LargeTablePaginator(operators, per_page=5)
    paginator.exact_limit = 4

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert paginator.is_estimate
    assert count >= 5  # never below what the bounded count saw
    counted, explained = (q["sql"] for q in queries)
    assert "COUNT(*)" in counted and "LIMIT 5" in counted
    assert explained.startswith("EXPLAIN")
    assert list(paginator.page(1).object_list) == list(operators[:5])
