"""The fold: counts move from Redis into the hourly, daily and monthly counters exactly
once, whatever crashes, races or Redis restarts happen around it; `usage_totals` reads
them back exactly for any range of days."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from tenants import accounting, services
from tenants.models import (
    UsageCounter,
    UsageCounterDaily,
    UsageCounterDekad,
    UsageCounterDelta,
    UsageCounterMonthly,
    UsageFold,
)
from tenants.selectors import usage_totals
from tenants.services import usage_counter_add, usage_counters_fold
from tests.factories import CollectorFactory, OperatorFactory
from tests.redis_server import serve

API = accounting.API_CALL


def redis_keys(pattern: str = "*") -> list[str]:
    client = accounting._redis()
    found = client.scan_iter(match=f"{accounting._key('')}{pattern}", count=1000)
    return sorted(key.decode() for key in found)


def totals(**filters) -> Counter:
    found = Counter()
    for operator_id, kind, key, connection_id, n in usage_totals(**filters):
        found[(operator_id, kind, key, connection_id)] += n
    return found


def table(model, period: str) -> dict:
    return {
        (row.operator_id, getattr(row, period), row.kind, row.key, row.connection): row.count
        for row in model.objects.all()
    }


class Crash(BaseException):
    """A worker killed at this point (nothing after it runs, no handler catches it)."""


# --- Folding ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_fold_moves_redis_counts_into_hourly_daily_and_monthly_buckets():
    alice, bob = OperatorFactory(), OperatorFactory()
    late_evening = datetime(2026, 1, 31, 23, 10, tzinfo=UTC)
    for at, operator, n in [
        (late_evening, alice, 2),
        (late_evening + timedelta(minutes=20), alice, 3),
        (late_evening + timedelta(hours=1), alice, 4),  # the 1st of February
        (late_evening, bob, 7),
    ]:
        accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=n, at=at)
    accounting.usage_count(
        operator_id=alice.pk,
        kind="gateway_request",
        key="http",
        connection="s|1/n%2",
        at=late_evening,
    )

    assert usage_counters_fold() == 4

    hour = late_evening.replace(minute=0)
    assert {
        (row.operator_id, row.hour, row.key, row.connection): row.count
        for row in UsageCounter.objects.all()
    } == {
        (alice.pk, hour, "billing", ""): 5,
        (alice.pk, hour + timedelta(hours=1), "billing", ""): 4,
        (bob.pk, hour, "billing", ""): 7,
        (alice.pk, hour, "http", "s|1/n%2"): 1,  # any text survives the Redis field
    }
    jan31, feb1 = date(2026, 1, 31), date(2026, 2, 1)
    assert table(UsageCounterDaily, "day") == {
        (alice.pk, jan31, API, "billing", ""): 5,
        (alice.pk, feb1, API, "billing", ""): 4,
        (bob.pk, jan31, API, "billing", ""): 7,
        (alice.pk, jan31, "gateway_request", "http", "s|1/n%2"): 1,
    }
    assert table(UsageCounterDekad, "dekad") == {
        (alice.pk, date(2026, 1, 21), API, "billing", ""): 5,  # the 21st to the 31st
        (alice.pk, date(2026, 2, 1), API, "billing", ""): 4,
        (bob.pk, date(2026, 1, 21), API, "billing", ""): 7,
        (alice.pk, date(2026, 1, 21), "gateway_request", "http", "s|1/n%2"): 1,
    }
    assert table(UsageCounterMonthly, "month") == {
        (alice.pk, date(2026, 1, 1), API, "billing", ""): 5,
        (alice.pk, date(2026, 2, 1), API, "billing", ""): 4,
        (bob.pk, date(2026, 1, 1), API, "billing", ""): 7,
        (alice.pk, date(2026, 1, 1), "gateway_request", "http", "s|1/n%2"): 1,
    }
    assert UsageFold.objects.count() == 2  # one per hour folded
    assert redis_keys() == []  # every hour renamed, folded and released
    assert usage_counters_fold() == 0


@pytest.mark.django_db(transaction=True)
def test_database_deltas_reach_the_daily_dekad_and_monthly_buckets_too():
    operator = OperatorFactory()
    for day, n in ((10, 3), (11, 2), (20, 1), (21, 4), (31, 5)):
        at = datetime(2026, 3, day, 23, 59, tzinfo=UTC)
        usage_counter_add(operator_id=operator.pk, kind="event", key="call", count=n, at=at)

    usage_counters_fold()

    assert sum(table(UsageCounterDaily, "day").values()) == 15
    assert {key[1]: n for key, n in table(UsageCounterDekad, "dekad").items()} == {
        date(2026, 3, 1): 3,
        date(2026, 3, 11): 3,
        date(2026, 3, 21): 9,
    }
    assert table(UsageCounterMonthly, "month") == {
        (operator.pk, date(2026, 3, 1), "event", "call", ""): 15
    }


@pytest.mark.django_db(transaction=True)
def test_counts_made_while_an_hour_is_folded_go_to_the_next_fold(monkeypatch):
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="metrics")
    fold_one = services._usage_fold_one

    def count_meanwhile(folding):
        accounting.usage_count(operator_id=operator.pk, kind=API, key="metrics")
        return fold_one(folding)

    monkeypatch.setattr(services, "_usage_fold_one", count_meanwhile)
    usage_counters_fold()
    assert totals() == {(operator.pk, API, "metrics", ""): 1}
    monkeypatch.undo()
    usage_counters_fold()
    assert totals() == {(operator.pk, API, "metrics", ""): 2}


@pytest.mark.django_db(transaction=True)
def test_a_crash_between_commit_and_release_is_not_folded_again(monkeypatch):
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=5)

    def killed(folding):
        raise Crash

    monkeypatch.setattr(accounting, "folding_release", killed)
    with pytest.raises(Crash):
        usage_counters_fold()
    assert UsageFold.objects.count() == 1  # committed
    assert len(redis_keys("folding:*")) == 1  # but never released
    monkeypatch.undo()

    usage_counters_fold()  # finds the folding key, sees its marker, only releases it
    usage_counters_fold()

    assert totals() == {(operator.pk, API, "billing", ""): 5}
    assert redis_keys() == []


@pytest.mark.django_db(transaction=True)
def test_a_crash_between_rename_and_commit_is_folded_by_the_next_run(monkeypatch):
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=5)
    fold_one = services._usage_fold_one

    def killed_before_commit(folding):
        with transaction.atomic():
            fold_one(folding)  # marker and deltas written, never committed
            raise Crash

    monkeypatch.setattr(services, "_usage_fold_one", killed_before_commit)
    with pytest.raises(Crash):
        usage_counters_fold()
    monkeypatch.undo()
    assert not UsageFold.objects.exists() and not UsageCounterDelta.objects.exists()
    assert len(redis_keys("folding:*")) == 1

    # And a worker killed right after the rename, before any statement.
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=2)
    assert len(accounting.hours_claim()) == 1
    assert len(redis_keys("folding:*")) == 2

    usage_counters_fold()

    assert totals() == {(operator.pk, API, "billing", ""): 7}
    assert redis_keys() == []


@pytest.mark.django_db(transaction=True)
def test_an_hour_claimed_and_counted_again_since_its_id_was_read_waits(monkeypatch):
    """A fold reads an hour's fold id, then another fold claims that hour and a count
    starts it afresh: the first must not rename the fresh counts under the old id (its
    marker would drop them)."""
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=3)
    read_id = accounting._uuid_or_none

    def another_fold_meanwhile(text):
        monkeypatch.setattr(accounting, "_uuid_or_none", read_id)
        usage_counters_fold()
        accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=4)
        return read_id(text)

    monkeypatch.setattr(accounting, "_uuid_or_none", another_fold_meanwhile)
    assert accounting.hours_claim() == []  # left for the next fold
    assert totals() == {(operator.pk, API, "billing", ""): 3}

    usage_counters_fold()

    assert totals() == {(operator.pk, API, "billing", ""): 7}
    assert redis_keys() == []


@pytest.mark.django_db(transaction=True)
def test_two_folds_of_one_folding_key_write_it_once():
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="oauth", n=9)
    (folding,) = accounting.hours_claim()
    start = threading.Barrier(2)
    written = []

    def fold():
        start.wait()
        try:
            written.append(services._usage_fold_one(folding))
        finally:
            connection.close()

    threads = [threading.Thread(target=fold) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(written) == [False, True]
    usage_counters_fold()
    assert totals() == {(operator.pk, API, "oauth", ""): 9}


@pytest.mark.django_db(transaction=True)
def test_folds_racing_with_each_other_and_with_counting_count_everything_once():
    operators = [OperatorFactory() for _ in range(3)]
    counted = Counter()
    stop = threading.Event()
    errors = []

    def count(operator):
        while not stop.is_set():
            accounting.usage_count(operator_id=operator.pk, kind=API, key="metrics")
            counted[operator.pk] += 1

    def fold():
        try:
            while not stop.is_set():
                usage_counters_fold()
        except Exception as error:  # reported below, so a failure is not silent
            errors.append(error)
        finally:
            connection.close()

    counters = [threading.Thread(target=count, args=(operator,)) for operator in operators]
    folders = [threading.Thread(target=fold) for _ in range(2)]
    for thread in counters + folders:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in counters + folders:
        thread.join()
    usage_counters_fold()

    assert errors == []
    assert sum(counted.values()) > 100
    assert totals() == {(pk, API, "metrics", ""): n for pk, n in counted.items()}
    assert redis_keys() == []


@pytest.mark.django_db(transaction=True)
def test_counts_of_an_operator_deleted_meanwhile_are_dropped():
    kept, deleted = OperatorFactory(), OperatorFactory()
    for operator in (kept, deleted):
        accounting.usage_count(operator_id=operator.pk, kind=API, key="billing")
    deleted.delete()

    usage_counters_fold()

    assert totals() == {(kept.pk, API, "billing", ""): 1}
    assert redis_keys() == []


@pytest.mark.django_db(transaction=True)
def test_markers_are_kept_while_their_folding_key_could_exist(settings):
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing")
    usage_counters_fold()
    kept = timedelta(hours=settings.TALLY["USAGE"]["REDIS_HOURS"]) + services.FOLD_MARKER_MARGIN

    usage_counters_fold(now=datetime.now(UTC) + kept - timedelta(minutes=1))
    assert UsageFold.objects.count() == 1
    usage_counters_fold(now=datetime.now(UTC) + kept + timedelta(minutes=1))
    assert not UsageFold.objects.exists()


@pytest.mark.django_db
def test_counts_wait_in_redis_with_an_expiry(settings):
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing")
    (hour_key,) = [key for key in redis_keys() if key.split(":")[-1].isdigit()]
    ttl = accounting._redis().ttl(hour_key)
    assert 0 < ttl <= settings.TALLY["USAGE"]["REDIS_HOURS"] * 3600


# --- A Redis of the test's own, restarted between requests --------------------------------


@pytest.fixture
def own_redis(settings, tmp_path):
    yield from serve(settings, tmp_path)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_after_a_redis_restart_totals_equal_everything_done(acme, api_client, own_redis):
    client = api_client(acme.token)
    collector = CollectorFactory(operator=acme.operator, active=True)
    data = f"/online-collection/v1/collectors/{collector.pk}/data"

    def requests(first_id: int) -> None:
        assert client.get("/usage-metering/v1/meter-types").status_code == 200
        assert client.get("/billing/v1/accounts").status_code == 200
        records = [{"id": f"r{first_id + n}", "type": "call"} for n in range(3)]
        assert client.post(data, {"data": records}).status_code == 202
        assert client.post(data, "{broken", content_type="application/json").status_code == 400

    requests(0)
    usage_counters_fold()
    own_redis.stop()
    own_redis.start()
    assert redis_keys() == []  # nothing survived the restart
    requests(100)
    requests(200)
    usage_counters_fold()

    by_key = Counter()
    for (_operator, kind, key, _connection), n in totals(operator_ids=[acme.operator.pk]).items():
        by_key[(kind, key)] += n
    # The fixture's token request went to the suite's own Redis, not this one.
    assert by_key == {
        (API, "usage-metering"): 3,
        (API, "billing"): 3,
        (API, "online-collection"): 6,
        ("gateway_request", "online-collection"): 6,
        ("event", "call"): 9,
    }


# --- Reading totals -----------------------------------------------------------------------


@pytest.mark.django_db
def test_usage_totals_match_the_hourly_counts_for_any_range():
    rng = random.Random(15)
    alice, bob = OperatorFactory(), OperatorFactory()
    start = datetime(2025, 11, 20, tzinfo=UTC)
    expected_rows = []
    for _ in range(400):
        at = start + timedelta(hours=rng.randrange(24 * 130))
        operator = rng.choice((alice, bob))
        kind, key = rng.choice([(API, "billing"), (API, "oauth"), ("event", "call")])
        n = rng.randrange(1, 5)
        usage_counter_add(operator_id=operator.pk, kind=kind, key=key, count=n, at=at)
        expected_rows.append((operator.pk, at.date(), kind, key, n))
        if rng.random() < 0.1:
            usage_counters_fold()  # some folded, some still pending deltas

    def brute(since, until, operator_ids=None, kinds=None) -> Counter:
        found = Counter()
        for operator_id, day, kind, key, n in expected_rows:
            in_range = (since is None or day >= since) and (until is None or day < until)
            chosen = (operator_ids is None or operator_id in operator_ids) and (
                kinds is None or kind in kinds
            )
            if in_range and chosen:
                found[(operator_id, kind, key, "")] += n
        return found

    first = start.date()
    bounds = [None, first, date(2025, 12, 1), date(2026, 1, 1), date(2026, 1, 2)]
    bounds += [first + timedelta(days=rng.randrange(140)) for _ in range(20)]
    for since in bounds:
        for until in bounds:
            if since is not None and until is not None and since >= until:
                assert totals(since=since, until=until) == Counter()
                continue
            assert totals(since=since, until=until) == brute(since, until), (since, until)
    since, until = date(2025, 12, 3), date(2026, 2, 27)
    assert totals(since=since, until=until, operator_ids=[bob.pk]) == brute(
        since, until, operator_ids={bob.pk}
    )
    assert totals(since=since, until=until, kinds=["event"]) == brute(since, until, kinds={"event"})


# --- The data migration -------------------------------------------------------------------


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_daily_dekad_and_monthly_rollups_start_with_the_hourly_counters():
    apps = migrate([("tenants", "0005_usage_rollups")])
    operator = apps.get_model("tenants", "Operator").objects.create(name="Old counters")
    Counter_ = apps.get_model("tenants", "UsageCounter")
    Delta = apps.get_model("tenants", "UsageCounterDelta")
    hour = datetime(2026, 4, 30, 22, tzinfo=UTC)
    for offset, key, connection_id, n in [
        (0, "online-collection", "c-1", 2),
        (1, "online-collection", "c-1", 3),
        (2, "online-collection", "c-1", 4),  # May the 1st
        (0, "http", "stream-1:node:a", 5),
    ]:
        Counter_.objects.create(
            operator=operator,
            hour=hour + timedelta(hours=offset),
            kind="gateway_request",
            key=key,
            connection=connection_id,
            count=n,
        )
    Delta.objects.create(
        operator=operator, hour=hour, kind="gateway_request", key="http", connection="s:n", count=1
    )
    try:
        apps = migrate([("tenants", "0006_usage_rollups_fill")])
        Daily = apps.get_model("tenants", "UsageCounterDaily")
        Dekad = apps.get_model("tenants", "UsageCounterDekad")
        Monthly = apps.get_model("tenants", "UsageCounterMonthly")
        assert {(r.day, r.key, r.connection): r.count for r in Daily.objects.all()} == {
            (date(2026, 4, 30), "online-collection", "c-1"): 5,
            (date(2026, 5, 1), "online-collection", "c-1"): 4,
            (date(2026, 4, 30), "http", "stream-1/node:a"): 5,
        }
        assert {(r.dekad, r.key, r.connection): r.count for r in Dekad.objects.all()} == {
            (date(2026, 4, 21), "online-collection", "c-1"): 5,
            (date(2026, 5, 1), "online-collection", "c-1"): 4,
            (date(2026, 4, 21), "http", "stream-1/node:a"): 5,
        }
        assert {(r.month, r.key, r.connection): r.count for r in Monthly.objects.all()} == {
            (date(2026, 4, 1), "online-collection", "c-1"): 5,
            (date(2026, 5, 1), "online-collection", "c-1"): 4,
            (date(2026, 4, 1), "http", "stream-1/node:a"): 5,
        }
        assert apps.get_model("tenants", "UsageCounterDelta").objects.get().connection == "s/n"
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())


# --- Admin --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_counters_are_listed_read_only_in_the_admin(staff_user):
    operator = OperatorFactory(name="Initech")
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing")
    usage_counter_add(operator_id=operator.pk, kind="event", key="call")
    browser = Client()
    browser.force_login(staff_user)
    models = ["usagecounterdaily", "usagecounterdekad", "usagecountermonthly"]
    models += ["usagecounterquarterly", "usagecounteryearly"]
    for model in ["usagecounterdelta", "usagecounter", *models]:
        page = browser.get(f"/admin/tenants/{model}/")
        assert page.status_code == 200, model
        assert "Initech" in page.content.decode(), model
        assert browser.get(f"/admin/tenants/{model}/add/").status_code == 403
        if model == "usagecounterdelta":
            usage_counters_fold()
    assert browser.get("/admin/tenants/usagefold/").status_code == 200
    row = UsageCounter.objects.first()
    assert browser.post(f"/admin/tenants/usagecounter/{row.pk}/change/", {}).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_comes_back_from_an_older_snapshot_folds_nothing_twice(own_redis):
    """Redis restored to an earlier state (a crash that reloads the last snapshot, or a
    failover to a replica that had not seen the last fold): hours folded since reappear
    as they were, and must not be folded again."""
    operator = OperatorFactory()
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=5)
    left_over = accounting.hours_claim()  # a folding key a crash left behind
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing", n=2)
    own_redis.snapshot()  # both the folding key and the hour's counts, unfolded
    usage_counters_fold()
    assert totals() == {(operator.pk, API, "billing", ""): 7}

    own_redis.kill()
    own_redis.start()
    assert len(redis_keys("folding:*")) == 1 and left_over  # the snapshot is back
    usage_counters_fold()

    assert totals() == {(operator.pk, API, "billing", ""): 7}
    assert redis_keys() == []
    # Counting goes on as before.
    accounting.usage_count(operator_id=operator.pk, kind=API, key="billing")
    usage_counters_fold()
    assert totals() == {(operator.pk, API, "billing", ""): 8}
