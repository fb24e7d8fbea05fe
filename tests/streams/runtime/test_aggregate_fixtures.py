"""The reference product's two data aggregator examples, run end to end through the API.

"Summarize Monthly Usage Data" (ALL_FILES) and "Cultflicks video streaming" (three
EACH_FILE aggregators) are imported as exported, made batch streams and executed. What
reaches their writers is compared with what the test derives on its own from the
exports' data: the scripts' arrays and lookup tables are read out of the script text,
and the rest of each stream (date, expression map, split, aggregation, classification,
email text) is worked out here in Python.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from streams import tasks
from streams.models import AggregationSession, StreamLogLine
from tests.streams.runtime.helpers import (
    STREAMS,
    fixture,
    import_stream,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

MONTHLY = "summarize-monthly-usage-data.json"
CULTFLICKS = "cultflicks-video-streaming.json"


# -- Running a stream ---------------------------------------------------------------------


def batch_stream(client, config: dict) -> dict:
    stream = import_stream(client, config)
    set_stream(client, stream["id"], processingType="batch", enabled=True)
    return stream


def execute(client, stream_id: str) -> tuple[dict, int]:
    """Run one execution; returns it as the API lists it and the id of the last log
    line written before it (so its own lines can be told apart)."""
    last = StreamLogLine.objects.filter(stream_id=stream_id).order_by("-id").first()
    response = client.post(f"{STREAMS}/{stream_id}/executions")
    assert response.status_code == 202, response.content
    tasks.execution_run(response.json()["id"])
    (latest, *_) = client.get(f"{STREAMS}/{stream_id}/executions").json()["executions"]
    assert latest["id"] == response.json()["id"]
    return latest, last.id if last else 0


def logged(stream_id: str, node_id: str, after: int = 0) -> list[Any]:
    lines = StreamLogLine.objects.filter(stream_id=stream_id, node_id=node_id, id__gt=after)
    return [line.payload for line in lines.order_by("id")]


def node_ids(config: dict) -> dict[str, str]:
    return {node["name"]: node["id"] for node in config["nodes"]}


def by_key(records: list[dict], *fields: str) -> dict[tuple, dict]:
    keyed = {tuple(record.get(name) for name in fields): record for record in records}
    assert len(keyed) == len(records), f"two records share a key {fields}: {records}"
    return keyed


# -- Reading the exports' scripts ---------------------------------------------------------

STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def js_literal(script: str, name: str) -> Any:
    """The array or object literal assigned to `const <name>` in a script, as Python
    data. The literals in the exports are JSON but for unquoted keys (`1:`, `name:`)
    and trailing commas, which are fixed outside the string literals only."""
    match = re.search(rf"const\s+{re.escape(name)}\s*=\s*", script)
    assert match, f"no const {name} in the script"
    start = match.end()
    assert script[start] in "[{", f"const {name} is not an array or object literal"
    depth, index = 0, start
    while True:
        string = STRING.match(script, index)
        if string:
            index = string.end()
            continue
        char = script[index]
        depth += char in "[{"
        depth -= char in "]}"
        index += 1
        if depth == 0:
            break
    text = script[start:index]
    pieces = []
    position = 0
    for string in STRING.finditer(text):
        pieces.append(_json_code(text[position : string.start()]))
        pieces.append(string.group())
        position = string.end()
    pieces.append(_json_code(text[position:]))
    return json.loads("".join(pieces))


def _json_code(code: str) -> str:
    code = re.sub(r"([{,]\s*)([A-Za-z_$][\w$]*|\d+)(\s*):", r'\1"\2"\3:', code)
    return re.sub(r",(\s*[}\]])", r"\1", code)


def script_of(config: dict, node_name: str) -> str:
    (node,) = [n for n in config["nodes"] if n["name"] == node_name]
    assert node["type"] == "transforms/script"
    return node["params"]["transform"]


# -- Summarize Monthly Usage Data ---------------------------------------------------------


def monthly_expected(config: dict, today: date) -> dict[str, int]:
    """The per-month totals of "Simulate Data" for the counter's values: value v is a
    download of 2v games `v` days from today (UTC), by USER-1001."""
    (counter,) = [n for n in config["nodes"] if n["type"] == "readers/counter"]
    totals: dict[str, int] = defaultdict(int)
    for value in range(1, counter["params"]["max"] + 1):
        totals[(today + timedelta(days=value)).strftime("%Y-%m")] += 2 * value
    return dict(totals)


def test_summarize_monthly_usage_sums_downloads_per_user_and_month(client):
    config = fixture(MONTHLY)
    ids = node_ids(config)
    script = script_of(config, "Simulate Data")
    # What the expectation below relies on, read from the export.
    assert "moment().add(payload.value, 'days')" in script
    assert "downloadedGame: 2 * payload.value" in script
    assert 'userId: "USER-1001"' in script
    stream = batch_stream(client, config)

    runs, days = [], set()
    for _ in range(2):
        before = datetime.now(UTC).date()
        execution, after_line = execute(client, stream["id"])
        after = datetime.now(UTC).date()
        days |= {before, after}
        runs.append(logged(stream["id"], ids["Log"], after_line))

        assert execution["status"] == "SUCCEEDED", execution
        assert execution["recordsRead"] == 5
        assert execution["recordsFailed"] == 0, execution["errors"]
        assert execution["errors"] == []
        # The V8 clock is UTC; an execution across midnight may use either day.
        candidates = [monthly_expected(config, day) for day in {before, after}]
        got = {line["Month"]: line["TotalDownload"] for line in runs[-1]}
        assert got in candidates, (got, candidates)
        expected = candidates[[c == got for c in candidates].index(True)]
        assert sum(got.values()) == 30  # 2 * (1 + 2 + 3 + 4 + 5)
        months = len(expected)
        assert sorted(runs[-1], key=lambda line: line["Month"]) == [
            {"Month": month, "TotalDownload": total, "User": "USER-1001"}
            for month, total in sorted(expected.items())
        ]
        for month in got:
            assert re.fullmatch(r"\d{4}-\d{2}", month)

        nodes = execution["nodes"]
        assert nodes[ids["Count"]] == {"in": 5, "out": 5, "failed": 0}
        assert nodes[ids["Simulate Data"]] == {"in": 5, "out": 5, "failed": 0}
        assert nodes[ids["Data Aggregator"]] == {"in": 5, "out": months, "failed": 0}
        assert nodes[ids["Monthly Record"]] == {"in": months, "out": months, "failed": 0}
        assert nodes[ids["Log"]] == {"in": months, "out": 0, "failed": 0}
        # ALL_FILES keeps nothing once the execution is over.
        assert not AggregationSession.objects.exists()

    # The second execution starts from nothing: the same totals, not doubled (unless
    # the day changed between the two, which moves the dates).
    if len(days) == 1:
        assert runs[1] == runs[0]
    assert sum(line["TotalDownload"] for line in runs[1]) == 30


# -- Cultflicks video streaming -----------------------------------------------------------


def js_round(value: Fraction) -> int:
    """Math.round: halves go up."""
    return math.floor(value + Fraction(1, 2))


def exact_average(values: list[int]) -> Decimal | int:
    """An average as exact as a decimal can be: the exact value when it has a finite
    decimal expansion, else the quotient to Decimal's 28 significant digits."""
    mean = Fraction(sum(values), len(values))
    if mean.denominator == 1:
        return mean.numerator
    return Decimal(mean.numerator) / Decimal(mean.denominator)


def cultflicks_views(config: dict) -> list[dict]:
    """The enriched view events, in the counter's order, as they leave "Calculate view
    percent", computed from the export's own tables."""
    (counter,) = [n for n in config["nodes"] if n["type"] == "readers/counter"]
    simulator = script_of(config, "View simulator")
    assert "const index = payload.value % 20;" in simulator
    assert "await push(view_array[index]);" in simulator
    view_array = js_literal(simulator, "view_array")
    user_db = js_literal(script_of(config, "Enrich user info"), "user_db")
    media_db = js_literal(script_of(config, "Enrich title info"), "media_db")
    assert len(view_array) == 23 and len(user_db) == 4 and len(media_db) == 11

    (date_node,) = [n for n in config["nodes"] if n["type"] == "transforms/date"]
    (item,) = date_node["params"]["items"]
    assert (item["field"], item["inputFormat"]) == ("timestamp", "YYYY-MMM-DD")
    assert item["outputFormat"] == "YYYY-MM-DDTHH:mm:ss.SSS[Z]"
    setting = {unit: op["value"] for unit, op in item["operation"].items()}
    assert all(op["mode"] == "set" for op in item["operation"].values())

    views = []
    for value in range(1, counter["params"]["max"] + 1):
        view = copy.deepcopy(view_array[value % 20])
        view = {**view, **user_db[str(view["user_id"])]}
        view = {**view, **media_db[view["title"]]}
        moment = datetime.strptime(view["timestamp"], "%Y-%b-%d").replace(**setting)
        view["timestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        view["view_percent"] = js_round(
            Fraction(100 * view["view_duration"], view["full_duration"])
        )
        views.append(view)
    return views


def cultflicks_expected(config: dict) -> dict[str, list[dict]]:
    views = cultflicks_views(config)
    month = lambda view: view["timestamp"][:7]  # noqa: E731

    # "Aggregate view time" (user, month) -> "Classify user" -> "Format for billing".
    per_user: dict[tuple, list[dict]] = defaultdict(list)
    for view in views:
        per_user[(view["user_id"], month(view))].append(view)
    billing, emails, raw_user = [], [], []
    for (user_id, period), group in per_user.items():
        last = group[-1]
        view_sum = sum(v["view_duration"] for v in group)
        full_sum = sum(v["full_duration"] for v in group)
        count = len(group)
        # JavaScript's own arithmetic: doubles, then Math.round.
        percent = math.floor(100 * view_sum / full_sum + 0.5)
        churn = percent < 76
        category = "standard"
        if view_sum > 200000:
            category = "heavy_user"
        elif view_sum < 100000:
            category = "light_user"
        metrics = (
            f"You have watched a total of {count} movies this month. "
            f"You completed {percent}% of the movies you started watching."
        )
        if churn:
            nudge = "Maybe you would be interested in our pay-per-view plan?"
        elif category == "heavy_user" and last["plan"] != "Premium":
            nudge = (
                "Sign up for our Premium plan and enjoy great movies at super high quality "
                "for 5 family members!"
            )
        else:
            nudge = "We are glad you're enjoying your Cultflicks experience."
        record = {
            "user_id": user_id,
            "name": last["name"],
            "email": last["email"],
            "birth_year": last["birth_year"],
            "country": last["country"],
            "plan": last["plan"],
            "month": period,
            "total_views": count,
            "total_view_duration": view_sum,
            "total_full_duration": full_sum,
            "average_view_percent": percent,
            "user_category": category,
            "user_churn_risk": churn,
            "metrics_msg": metrics,
            "nudge_msg": nudge,
        }
        billing.append(record)
        raw_user.append(
            {
                "user_id": user_id,
                "month_timestamp": period,
                "sum_view_duration": view_sum,
                "sum_full_duration": full_sum,
                "carry_last_birth_year": last["birth_year"],
                "carry_last_country": last["country"],
                "carry_last_email": last["email"],
                "carry_last_name": last["name"],
                "count_title": count,
                "carry_last_plan": last["plan"],
                "carry_last_os_type": last["os_type"],
            }
        )
        emails.append(
            {
                "subject": "Thank you for using Cultflicks!",
                "message": (
                    f"Hi dear {record['name']}, Your email is {record['email']}, your country "
                    f"is {record['country']}, and you were born on {record['birth_year']}. "
                    f"{nudge} {metrics}  Best regards, Cultflicks"
                ),
            }
        )

    # "View completion check": over 90 completed, under 91 not (the first rule wins).
    completed = [view for view in views if view["view_percent"] > 90]
    not_completed = [view for view in views if not view["view_percent"] > 90]
    assert all(view["view_percent"] < 91 for view in not_completed)

    # "Count completed" (month, title) -> "Format for settlement".
    settlement, raw_completed = [], []
    for (period, title), group in _grouped(completed, month).items():
        raw_completed.append(
            {
                "month_timestamp": period,
                "title": title,
                "count_title": len(group),
                "sum_view_duration": sum(v["view_duration"] for v in group),
                "carry_last_revenue_sharing_model": group[-1]["revenue_sharing_model"],
                "carry_last_ip_owner": group[-1]["ip_owner"],
            }
        )
        settlement.append(
            {
                "total_views": len(group),
                "total_view_duration": sum(v["view_duration"] for v in group),
                "revenue_sharing_model": group[-1]["revenue_sharing_model"],
                "ip_owner": group[-1]["ip_owner"],
                "month": period,
                "title": title,
            }
        )
    # "Count not completed" (month, title) -> "Format for analytics": its aggregator
    # carries no ip_owner, so the map writes none.
    analytics, raw_not_completed = [], []
    for (period, title), group in _grouped(not_completed, month).items():
        raw_not_completed.append(
            {
                "month_timestamp": period,
                "title": title,
                "count_title": len(group),
                "sum_view_duration": sum(v["view_duration"] for v in group),
                "avg_view_percent": exact_average([v["view_percent"] for v in group]),
                "carry_last_revenue_sharing_model": group[-1]["revenue_sharing_model"],
            }
        )
        analytics.append(
            {
                "total_views": len(group),
                "total_view_duration": sum(v["view_duration"] for v in group),
                "revenue_sharing_model": group[-1]["revenue_sharing_model"],
                "month": period,
                "title": title,
                "average_view_perc": exact_average([v["view_percent"] for v in group]),
            }
        )
    return {
        "views": views,
        "billing": billing,
        "emails": emails,
        "settlement": settlement,
        "analytics": analytics,
        "completed": completed,
        "not_completed": not_completed,
        "Aggregate view time": (raw_user, ("user_id", "month_timestamp")),
        "Count completed": (raw_completed, ("title", "month_timestamp")),
        "Count not completed": (raw_not_completed, ("title", "month_timestamp")),
    }


def _grouped(views: list[dict], month) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for view in views:
        groups[(month(view), view["title"])].append(view)
    return groups


AGGREGATORS = ("Aggregate view time", "Count completed", "Count not completed")


def cultflicks_config() -> dict:
    """The export with its No-op writers made log writers (same ids and names), so
    what reaches them can be read back."""
    config = fixture(CULTFLICKS)
    writers = [node for node in config["nodes"] if node["type"] == "writers/noop"]
    assert {node["name"] for node in writers} == {
        "To Billing",
        "To partner settlement",
        "To analytics",
        "Send email notification",
    }
    for node in writers:
        node["type"] = "writers/log"
    # A log writer on each aggregator's output as well, to see its records as they
    # leave it (the maps after them drop some fields: os_type, createdAt).
    for name in AGGREGATORS:
        (node,) = [n for n in config["nodes"] if n["name"] == name]
        assert node["type"] == "transforms/data_aggregate"
        assert node["params"]["flushType"] == "EACH_FILE"
        config["nodes"].append(
            {"id": f"tap-{node['id']}", "type": "writers/log", "name": f"Tap {name}", "params": {}}
        )
        config["edges"].append(
            {"id": f"tap-edge-{node['id']}", "from": node["id"], "to": f"tap-{node['id']}"}
        )
    return config


def test_the_expectation_reads_the_scripts_tables():
    """The literal parsing the expectations rest on, checked on a few known entries."""
    config = fixture(CULTFLICKS)
    view_array = js_literal(script_of(config, "View simulator"), "view_array")
    assert view_array[9] == {
        "user_id": 4,
        "title": "Kidnapping, Caucasian Style!",
        "timestamp": "2022-Jan-02",
        "full_duration": 7500,
        "view_duration": 7460,
        "device_type": "mobile",
        "os_type": "android",
    }
    users = js_literal(script_of(config, "Enrich user info"), "user_db")
    assert users["2"]["plan"] == "Premium" and users["4"]["country"] == "Greecey"
    media = js_literal(script_of(config, "Enrich title info"), "media_db")
    assert media["They Saved Hitler's Brain"] == {
        "ip_owner": "Vox",
        "revenue_sharing_model": "view_time",
        "year_made": 1964,
    }
    views = cultflicks_views(config)
    assert views[0]["timestamp"] == "2022-01-01T23:59:59.000Z"  # value 1: index 1
    assert views[0]["view_percent"] == 58  # 425000 / 7300 = 58.2...
    assert views[99]["title"] == "Murder Tomatoes"  # value 100: index 0


def test_cultflicks_aggregates_bill_settle_and_analyse_as_the_export_means(client):
    config = cultflicks_config()
    ids = node_ids(config)
    expected = cultflicks_expected(config)
    # The data is rich enough to tell a wrong aggregation apart: both branches of the
    # split are taken, titles are seen by several users with different view percents
    # (so an average per title is not one record's), and every user is billed.
    assert expected["completed"] and expected["not_completed"]
    assert any(isinstance(row["average_view_perc"], Decimal) for row in expected["analytics"]), (
        "no fractional average to check"
    )
    assert len(expected["billing"]) == 4
    for user in (2, 3):  # carry_last is told from carry_first by the OS
        seen = [view["os_type"] for view in expected["views"] if view["user_id"] == user]
        assert seen[0] != seen[-1]
    stream = batch_stream(client, config)

    runs = []
    for _ in range(2):
        execution, after = execute(client, stream["id"])
        assert execution["status"] == "SUCCEEDED", execution
        assert execution["recordsRead"] == 100
        assert execution["recordsFailed"] == 0, execution["errors"]

        billing = logged(stream["id"], ids["To Billing"], after)
        settlement = logged(stream["id"], ids["To partner settlement"], after)
        analytics = logged(stream["id"], ids["To analytics"], after)
        emails = logged(stream["id"], ids["Send email notification"], after)

        assert by_key(billing, "user_id", "month") == by_key(
            expected["billing"], "user_id", "month"
        )
        assert by_key(settlement, "title", "month") == by_key(
            expected["settlement"], "title", "month"
        )
        assert by_key(analytics, "title", "month") == by_key(
            expected["analytics"], "title", "month"
        )
        for row in analytics:
            # Exact decimals, never floats.
            assert isinstance(row["average_view_perc"], int | Decimal), row
        assert sorted(emails, key=lambda e: e["message"]) == sorted(
            expected["emails"], key=lambda e: e["message"]
        )

        # Every event is counted once on each side of the split.
        assert sum(row["total_views"] for row in billing) == 100
        assert (
            sum(row["total_views"] for row in settlement)
            + sum(row["total_views"] for row in analytics)
            == 100
        )
        assert sum(row["total_view_duration"] for row in billing) == sum(
            view["view_duration"] for view in expected["views"]
        )

        # The aggregators' own records: named as the spec says, carrying the last
        # value of each group (users 2 and 3 end on another OS than they start with),
        # and created at the execution's time.
        started = datetime.fromisoformat(execution["startedAt"].replace("Z", "+00:00"))
        for name in AGGREGATORS:
            raw = logged(stream["id"], f"tap-{ids[name]}", after)
            created = {row.pop("createdAt") for row in raw}
            assert len(created) == 1, created
            (created_at,) = created
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created_at)
            moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
            assert abs(moment - started) < timedelta(seconds=1)
            rows, fields = expected[name]
            assert by_key(raw, *fields) == by_key(rows, *fields), name

        # Classification sanity, on top of the exact comparison above.
        for row in billing:
            assert row["user_category"] in {"heavy_user", "standard", "light_user"}
            assert row["user_churn_risk"] is (row["average_view_percent"] < 76)
            assert f"a total of {row['total_views']} movies" in row["metrics_msg"]

        nodes = execution["nodes"]
        completed, not_completed = len(expected["completed"]), len(expected["not_completed"])
        for name in (
            "Count",
            "View simulator",
            "Enrich user info",
            "Enrich title info",
            "Date",
            "Calculate view percent",
        ):
            assert nodes[ids[name]] == {"in": 100, "out": 100, "failed": 0}, name
        assert nodes[ids["View completion check"]] == {"in": 100, "out": 100, "failed": 0}
        groups = {
            "Aggregate view time": (100, len(expected["billing"])),
            "Count completed": (completed, len(expected["settlement"])),
            "Count not completed": (not_completed, len(expected["analytics"])),
        }
        for name, (records, outputs) in groups.items():
            assert nodes[ids[name]] == {"in": records, "out": outputs, "failed": 0}, name
        for name, records in (
            ("To Billing", len(expected["billing"])),
            ("Send email notification", len(expected["billing"])),
            ("To partner settlement", len(expected["settlement"])),
            ("To analytics", len(expected["analytics"])),
        ):
            assert nodes[ids[name]] == {"in": records, "out": 0, "failed": 0}, name

        # EACH_FILE groups live within the execution: nothing is stored between them.
        assert not AggregationSession.objects.exists()
        runs.append((billing, settlement, analytics, emails))

    # The second execution gives the same aggregates, not the first one's plus its own.
    assert runs[1] == runs[0]
