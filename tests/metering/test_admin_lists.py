"""The metering admin as staff use it: wide lists that cost the same queries however
many rows they show, exact numbers, notifications that say (and link) which meter they
are about, resending them, price tiers and custom fields edited as rows, and names a
person recognises."""

from __future__ import annotations

import datetime
import html
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.models import (
    Alert,
    BillingAccount,
    Customer,
    ExchangeRate,
    Meter,
    MeterPeriod,
    MeterType,
    Notification,
    PlanRate,
    PricePlan,
)
from metering.notifications import notifications_deliver_due
from metering.resets import meters_reset_due
from metering.services import (
    billing_account_create,
    customer_update,
    exchange_rate_set,
    meter_delete,
    price_plan_create,
)
from metering.usage import UsageUpdate, usage_apply
from tests.factories import MeterTypeFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


@pytest.fixture
def staff(staff_user) -> Client:
    browser = Client()
    browser.force_login(staff_user)
    return browser


@pytest.fixture
def api_calls(acme) -> MeterType:
    """Daily meters of 8000 calls that alert at half their capacity."""
    return MeterTypeFactory(
        operator=acme.operator,
        name="API calls",
        capacity=Decimal(8000),
        thresholds=[{"capacityPercentage": 50, "name": "HALF"}],
    )


def use(meter_type: MeterType, customers: range, value: str = "4068") -> None:
    """Usage of `value` for each customer: one meter each, past half its capacity (an
    alert and its notification), then the day's reset (a closed period and its
    notification), then the delivery sweep."""
    now = timezone.now()
    updates = [
        UsageUpdate(meter_type.pk, None, "default", f"user{n}@example.com", Decimal(value), now)
        for n in customers
    ]
    usage_apply(operator=meter_type.operator, updates=updates)
    meters_reset_due(now=now + DAY)
    notifications_deliver_due()  # no webhook endpoint: SKIPPED, as Beat's sweep marks them


def queries_for(staff, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(url)
    assert response.status_code == 200, response.content[:2000]
    return len(queries)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/metering/meter/",
        "/admin/metering/meterperiod/",
        "/admin/metering/notification/",
        "/admin/metering/alert/",
        "/admin/metering/customer/",
        "/admin/metering/usagerollup/",
    ],
)
def test_wide_lists_run_the_same_queries_for_2_or_12_meters(staff, api_calls, url):
    use(api_calls, range(2))
    few = queries_for(staff, url)
    use(api_calls, range(2, 12))
    assert Meter.objects.count() == 12 and MeterPeriod.objects.count() == 12

    assert queries_for(staff, url) == few


def test_meters_are_named_by_customer_and_type_and_link_what_they_belong_to(staff, api_calls):
    use(api_calls, range(1))
    meter = Meter.objects.get()
    customer = Customer.objects.get()
    customer_update(customer=customer, name="Carol Chen", email="")

    page = staff.get("/admin/metering/meter/").content.decode()

    assert str(meter) == "user0@example.com · API calls"
    assert "user0@example.com · API calls" in page
    assert f"/admin/metering/customer/{customer.pk}/change/" in page
    assert f"/admin/tenants/operator/{api_calls.operator_id}/change/" in page
    detail = staff.get(f"/admin/metering/meter/{meter.pk}/change/").content.decode()
    assert f"/admin/metering/metertype/{api_calls.pk}/change/" in detail
    assert f"/admin/metering/customer/{customer.pk}/change/" in detail


def test_numbers_are_exact_without_trailing_zeros_in_lists_and_pages(staff, api_calls, acme):
    use(api_calls, range(1), value="4068")
    storage = MeterTypeFactory(operator=acme.operator, name="Storage", capacity=Decimal(1))
    usage_apply(
        operator=acme.operator,
        updates=[UsageUpdate(storage.pk, None, "default", "dave", Decimal("0.5"), timezone.now())],
    )
    exchange_rate_set(
        operator=acme.operator, currency="EUR", date=datetime.date(2026, 5, 1), rate=Decimal("0.92")
    )
    period = MeterPeriod.objects.get()
    rate = ExchangeRate.objects.get()
    alert = Alert.objects.get()

    pages = {
        "meters": staff.get("/admin/metering/meter/"),
        "periods": staff.get("/admin/metering/meterperiod/"),
        "period": staff.get(f"/admin/metering/meterperiod/{period.pk}/change/"),
        "alerts": staff.get("/admin/metering/alert/"),
        "alert": staff.get(f"/admin/metering/alert/{alert.pk}/change/"),
        "rates": staff.get("/admin/metering/exchangerate/"),
        "rate": staff.get(f"/admin/metering/exchangerate/{rate.pk}/change/"),
    }

    for name, response in pages.items():
        html = response.content.decode()
        assert response.status_code == 200, name
        assert not re.search(r"\d\.\d*0{4,}\b", html), f"trailing zeros on {name}"
    assert re.search(r">\s*0\.5\s*<", pages["meters"].content.decode())
    assert re.search(r">\s*4068\s*<", pages["periods"].content.decode())
    assert re.search(r">\s*4068\s*<", pages["period"].content.decode())
    assert re.search(r">\s*4000\s*<", pages["alert"].content.decode())  # the threshold
    assert re.search(r">\s*0\.92\s*<", pages["rates"].content.decode())
    assert 'value="0.92"' in pages["rate"].content.decode()  # the input, too
    assert str(rate) == "EUR on 2026-05-01: 0.92"
    assert str(alert) == "HALF reached at 4068"


def test_a_notification_says_which_meter_it_is_about_and_links_it(staff, api_calls):
    use(api_calls, range(1))
    meter = Meter.objects.get()
    crossed = Notification.objects.get(kind=Notification.Kind.THRESHOLD_CROSSED)

    page = staff.get("/admin/metering/notification/").content.decode()

    link = f'href="/admin/metering/meter/{meter.pk}/change/">user0@example.com · API calls<'
    assert page.count(link) == 2  # the alert and the closed period
    assert str(crossed) == "Threshold Crossed: user0@example.com · API calls (skipped)"
    detail = staff.get(f"/admin/metering/notification/{crossed.pk}/change/").content.decode()
    assert link in detail

    meter_delete(meter=meter)
    page = staff.get("/admin/metering/notification/").content.decode()
    assert "user0@example.com · API calls" in page
    assert f"/admin/metering/meter/{meter.pk}/change/" not in page  # nothing to link


def test_staff_resend_notifications_from_the_list(staff, api_calls):
    use(api_calls, range(2))
    chosen = list(Notification.objects.filter(kind=Notification.Kind.THRESHOLD_CROSSED))
    others = Notification.objects.exclude(pk__in=[n.pk for n in chosen])
    assert {n.status for n in chosen} == {Notification.Status.SKIPPED}  # no endpoint yet

    response = staff.post(
        "/admin/metering/notification/",
        {"action": "resend", "_selected_action": [str(n.pk) for n in chosen]},
        follow=True,
    )

    assert "Queued 2 notification(s) again." in response.content.decode()
    for notification in chosen:
        notification.refresh_from_db()
        assert (notification.status, notification.attempts) == (Notification.Status.PENDING, 0)
    assert set(others.values_list("status", flat=True)) == {Notification.Status.SKIPPED}


def test_notifications_are_found_by_the_customer_they_are_about(staff, api_calls):
    use(api_calls, range(3))

    found = staff.get("/admin/metering/notification/", {"q": "user1@example.com"})

    about = {n._user_id for n in found.context["cl"].result_list}
    assert about == {"user1@example.com"}


def _plan_form(acme, meter_type, tiers: list[tuple[str, str]], **fields) -> dict:
    data = {
        "operator": str(acme.operator.pk),
        "name": "Graduated",
        "description": "",
        "rates-TOTAL_FORMS": "1",
        "rates-INITIAL_FORMS": "0",
        "rates-MIN_NUM_FORMS": "0",
        "rates-MAX_NUM_FORMS": "1000",
        "rates-0-meter_type": str(meter_type.pk),
        "rates-0-model": "GRADUATED",
        "rates-0-unit_price": "",
    }
    for row in range(6):
        bound, price = tiers[row] if row < len(tiers) else ("", "")
        data[f"rates-0-tiers_{row * 2}"] = bound
        data[f"rates-0-tiers_{row * 2 + 1}"] = price
    data.update(fields)
    return data


def test_graduated_tiers_are_edited_as_rows(staff, acme, api_calls):
    form = _plan_form(acme, api_calls, [("1000", "0.10"), ("", "0.080")])

    response = staff.post("/admin/metering/priceplan/add/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    rate = PlanRate.objects.get()
    assert rate.tiers == [
        {"upTo": Decimal(1000), "unitPrice": Decimal("0.1")},
        {"upTo": None, "unitPrice": Decimal("0.08")},
    ]
    page = staff.get(f"/admin/metering/priceplan/{rate.plan_id}/change/").content.decode()
    assert 'name="rates-0-tiers_0" value="1000"' in page
    assert 'name="rates-0-tiers_1" value="0.1"' in page
    assert 'name="rates-0-tiers_3" value="0.08"' in page
    listed = staff.get("/admin/metering/planrate/").content.decode()
    assert "≤ 1000: 0.1; ≤ ∞: 0.08" in listed


@pytest.mark.parametrize(
    "tiers, message",
    [
        ([("1000", "0.1"), ("500", "0.05"), ("", "0.01")], "Row 2, up to: Must be above"),
        ([("", "0.1"), ("1000", "0.05")], "Row 1, up to: Only the last tier may be open"),
        ([("1000", "")], "Row 1: give a unit price."),
        ([("1000", "-1")], "Row 1, unit price: Must not be negative."),
        ([], "GRADUATED rates need at least one tier."),
    ],
)
def test_tier_rows_are_checked_like_the_api(staff, acme, api_calls, tiers, message):
    response = staff.post("/admin/metering/priceplan/add/", _plan_form(acme, api_calls, tiers))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not PricePlan.objects.exists()


def test_custom_fields_are_edited_as_name_and_value_rows(staff, api_calls, acme, api_client):
    use(api_calls, range(1))
    meter = Meter.objects.get()
    url = f"/admin/metering/meter/{meter.pk}/change/"
    rows = {f"custom_fields_{n}": "" for n in range(10)}
    rows.update(
        {
            "custom_fields_0": "plan",
            "custom_fields_1": "gold",
            "custom_fields_2": "seats",
            "custom_fields_3": "12",
            "custom_fields_4": "trial",
            "custom_fields_5": "false",
            "custom_fields_6": "code",
            "custom_fields_7": '"12"',
            "custom_fields_8": "",
        }
    )
    inlines = {
        f"{prefix}-{count}": "0"
        for prefix in ("periods", "alerts")
        for count in ("TOTAL_FORMS", "INITIAL_FORMS")
    }
    data = {"capacity": "", "uses_type_thresholds": "on", **rows, **inlines}
    data.update({f"thresholds_{n}": "" for n in range(20)})

    response = staff.post(url, data)

    assert response.status_code == 302, response.content.decode()[:3000]
    meter.refresh_from_db()
    assert meter.custom_fields == {"plan": "gold", "seats": 12, "trial": False, "code": "12"}
    answer = api_client(acme.token).get(f"/usage-metering/v1/meters/{meter.pk}")
    assert answer.json()["customFields"] == meter.custom_fields
    shown = _rows_shown(staff.get(url).content.decode(), "custom_fields")
    assert shown == {"plan": "gold", "seats": "12", "trial": "false", "code": '"12"'}
    assert staff.post(url, data).status_code == 302  # saved again unchanged: still text
    meter.refresh_from_db()
    assert meter.custom_fields["code"] == "12"

    twice = {**data, "custom_fields_2": "plan"}
    refused = staff.post(url, twice)
    assert "Row 2: another row has the name &#x27;plan&#x27;." in refused.content.decode()


def _rows_shown(page: str, name: str) -> dict[str, str]:
    """The name / value rows a change page shows for a rows field."""
    values = dict(re.findall(rf'name="{name}_(\d+)" value="([^"]*)"', page))
    names = {int(i): html.unescape(v) for i, v in values.items()}
    return {names[i]: names.get(i + 1, "") for i in sorted(names) if i % 2 == 0 and names[i]}


def test_pricing_and_customers_read_as_a_person_would_say_them(acme, api_calls):
    account = billing_account_create(
        operator=acme.operator,
        account_id="acct-7",
        customer_id="carol@example.com",
        name="Carol's team",
        invoice_currency="EUR",
    )
    plan = price_plan_create(
        operator=acme.operator,
        name="Standard",
        rates=[{"meter_type_id": api_calls.pk, "model": "PER_UNIT", "unit_price": Decimal(1)}],
    )
    customer = Customer.objects.get(external_id="carol@example.com")
    customer_update(customer=customer, name="Carol Chen", email="")
    customer.refresh_from_db()

    assert str(customer) == "Carol Chen (carol@example.com)"
    assert str(BillingAccount.objects.get(pk=account.pk)) == "Carol's team (acct-7)"
    assert str(PlanRate.objects.get(plan=plan)) == "Standard · API calls"
