"""Hostile bodies on every JSON write endpoint: a 400 in the shared shape, never a 500,
and nothing stored; in a batch, only the bad record is refused."""

from __future__ import annotations

import pytest
import requests

from collection.models import Record
from metering.models import Meter, MeterType
from parameters.models import Parameter
from tests.conftest import AUDIENCE, assert_error_body
from tests.factories import CollectorFactory, MeterTypeFactory, ParameterFactory

pytestmark = pytest.mark.django_db

DEEP = b"[" * 1500 + b"]" * 1500
# Raw bodies: what a client library would never produce, but a socket can send.
HOSTILE = {
    "nested 1,500 levels": DEEP,
    "nested 70 levels": b'{"name": ' + b"[" * 70 + b"]" * 70 + b"}",
    "exponent past Decimal": b'{"name": 1E+99999999999999999999}',
    "exponent past numeric": b'{"name": "x", "capacity": 1e200000}',
    "17,000 fractional digits": b'{"name": "x", "capacity": 1.' + b"1" * 17000 + b"}",
    "5,000-digit integer": b'{"name": ' + b"9" * 5000 + b"}",
    "NUL in a string": b'{"name": "a\\u0000b"}',
    "NUL in a key": b'{"na\\u0000me": "a"}',
    "unpaired surrogate": b'{"name": "\\ud800"}',
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "repeated field": b'{"name": "a", "unit": "u", "name": "b"}',
}


@pytest.fixture
def scene(acme, settings):
    for group in settings.TALLY["RATE_LIMITS"]:
        settings.TALLY["RATE_LIMITS"][group] = {"rate": 1e6, "burst": 1e6}
    meter_type = MeterTypeFactory(operator=acme.operator, name="calls")
    ParameterFactory(operator=acme.operator, name="region")
    collector = CollectorFactory(operator=acme.operator)
    return {"meter_type": meter_type, "collector": collector}


def write_endpoints(scene) -> list[tuple[str, str]]:
    meter_type = scene["meter_type"]
    return [
        ("post", "/usage-metering/v1/meter-types"),
        ("patch", f"/usage-metering/v1/meter-types/{meter_type.pk}"),
        ("post", "/usage-metering/v1/meters"),
        ("post", "/online-collection/v1/collectors"),
        ("post", "/global-parameters/v1/parameters"),
        ("delete", "/global-parameters/v1/parameters"),
        ("patch", "/global-parameters/v1/parameters/region"),
        ("post", f"/online-collection/v1/collectors/{scene['collector'].pk}/data"),
    ]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_json_write_endpoint_answers_400_and_stores_nothing(acme, api_client, scene, case):
    client = api_client(acme.token)
    before = (
        MeterType.objects.count(),
        Meter.objects.count(),
        Parameter.objects.count(),
        Record.objects.count(),
    )
    for method, path in write_endpoints(scene):
        response = getattr(client, method)(path, HOSTILE[case])
        body = assert_error_body(response, 400)
        assert "\x00" not in response.content.decode("utf-8"), (method, path)
        assert body["details"] or body["message"], (method, path)
    after = (
        MeterType.objects.count(),
        Meter.objects.count(),
        Parameter.objects.count(),
        Record.objects.count(),
    )
    assert after == before
    assert MeterType.objects.get(pk=scene["meter_type"].pk).name == "calls"


def test_the_error_names_where_the_problem_is(acme, api_client, scene):
    client = api_client(acme.token)
    response = client.post(
        "/usage-metering/v1/meter-types", b'{"name": "x", "thresholds": [{"value": 1e200000}]}'
    )
    body = assert_error_body(response, 400)
    assert body["details"] == [
        {
            "field": "thresholds[0].value",
            "message": "This number is too large or too precise to be stored.",
        }
    ]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_the_token_endpoint_answers_400_invalid_request(db, client, case):
    response = client.post("/oauth/token", HOSTILE[case], content_type="application/json")
    if len(HOSTILE[case]) > 16 * 1024:  # the token endpoint's own body limit comes first
        assert_error_body(response, 413)
        return
    body = assert_error_body(response, 400)
    assert body["error"] == "invalid_request"


@pytest.mark.parametrize(
    "form",
    [
        "client_id=%00&client_secret=x&grant_type=client_credentials&audience=a",
        "client_id=a&client_secret=%00&grant_type=client_credentials&audience=a",
        "client_id=a&client_secret=b&grant_type=client_credentials&audience=a&scope=%00",
        "client_id=%ED%A0%80&client_secret=b&grant_type=client_credentials&audience=a",
        "%00=1&%00=2&client_id=a",
    ],
)
def test_form_token_requests_with_nul_or_surrogates_are_refused_cleanly(db, client, form):
    response = client.post("/oauth/token", form, content_type="application/x-www-form-urlencoded")
    assert response.status_code in (400, 401), response.content
    assert response["Content-Type"] == "application/json"
    assert "\x00" not in response.content.decode("utf-8")


def test_a_nul_in_a_path_parameter_is_a_404(acme, api_client, scene):
    response = api_client(acme.token).get("/global-parameters/v1/parameters/%00")
    assert_error_body(response, 404)


def test_one_unstorable_record_does_not_cost_its_neighbours(acme, api_client, scene):
    url = f"/online-collection/v1/collectors/{scene['collector'].pk}/data"
    body = (
        b'{"data": [{"id": "ok-1", "v": 0.5}, {"id": "big", "v": 1e200000},'
        b' {"id": "long", "v": 1.' + b"1" * 17000 + b'}, {"id": "nul", "v": "a\\u0000"},'
        b' {"id": "ok-2", "nested": {"deep": [1e-5]}},'
        b' {"id": "deep", "v": ' + b"[" * 100 + b"]" * 100 + b"},"
        b' {"id": "wide", "v": [' + b"[]," * 80 + b"[]]},"
        b' {"id": "huge-int", "v": ' + b"9" * 5000 + b"}]}"
    )
    response = api_client(acme.token).post(url, body)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["accepted"] == 3
    assert [item["index"] for item in answer["rejected"]] == [1, 2, 3, 5, 7]
    assert "more digits than can be stored" in answer["rejected"][4]["reason"]
    assert "Nested more than 64 levels deep" in answer["rejected"][3]["reason"]
    assert "v: This number is too large" in answer["rejected"][0]["reason"]
    stored = set(Record.objects.values_list("record_id", flat=True))
    assert stored == {"ok-1", "ok-2", "wide"}  # many brackets, but shallow
    assert Record.objects.get(record_id="ok-1").payload == {"v": 0.5}


@pytest.mark.django_db(transaction=True)
def test_through_the_live_server(live_server, settings):
    """The same refusals over a real socket (the test client skips the WSGI layer)."""
    from tests.conftest import make_tenant

    settings.TALLY["API_AUDIENCE"] = AUDIENCE
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 1000, "burst": 1000}
    tenant = make_tenant("Live hostile")
    headers = {"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"}
    for case, body in HOSTILE.items():
        response = requests.post(
            f"{live_server.url}/usage-metering/v1/meter-types",
            data=body,
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 400, (case, response.text[:200])
        assert response.json()["status"] == 400


@pytest.mark.parametrize("value", ["%D9%A3", "+5", "1e1", "0x10", "3.0", "%EF%BC%93"])
def test_integer_query_parameters_take_ascii_digits_only(acme, api_client, scene, value):
    response = api_client(acme.token).get(f"/usage-metering/v1/meter-types?limit={value}")
    body = assert_error_body(response, 400)
    assert body["details"][0]["field"] == "limit"


def test_empty_query_parameters_count_as_absent(acme, api_client, scene):
    client = api_client(acme.token)
    response = client.get("/usage-metering/v1/meter-types?limit=&skip=&sortBy=&sortOrder=")
    assert response.status_code == 200, response.content
    meters = client.get("/usage-metering/v1/meters?meterTypeId=&userId=&meterKey=")
    assert meters.status_code == 200, meters.content


@pytest.mark.parametrize(
    "path",
    [
        "/usage-metering/v1/meter-types/{meter_type}",
        "/global-parameters/v1/parameters/region",
        "/online-collection/v1/collectors/{collector}",
    ],
)
def test_an_empty_patch_is_a_400(acme, api_client, scene, path):
    url = path.format(meter_type=scene["meter_type"].pk, collector=scene["collector"].pk)
    assert_error_body(api_client(acme.token).patch(url, {}), 400)


def test_the_schema_says_a_patch_needs_a_field(client):
    schema = client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        if "patch" not in operations:
            continue
        reference = operations["patch"]["requestBody"]["content"]["application/json"]["schema"]
        assert components[reference["$ref"].rsplit("/", 1)[-1]]["minProperties"] == 1, path


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"name": "a", "name": "b"}', "name"),
        (b'{"name": "a", "\\u006eame": "b"}', "name"),  # the same name, escaped
        (b'{"name": "a", "thresholds": [{"value": 1, "value": 2}]}', "value"),
    ],
)
def test_a_repeated_field_name_is_refused_not_resolved(acme, api_client, scene, body, field):
    response = api_client(acme.token).post("/usage-metering/v1/meter-types", body)
    error = assert_error_body(response, 400)
    assert error["details"] == [
        {"field": field, "message": "This field name appears twice in one object."}
    ]


def test_the_schema_refuses_what_the_server_refuses(client):
    schema = client.get("/api/schema/?format=json").json()
    components, paths = schema["components"]["schemas"], schema["paths"]

    bulk_delete = paths["/global-parameters/v1/parameters"]["delete"]["requestBody"]
    assert bulk_delete["required"] is True
    assert components["ParameterCreateRequest"]["properties"]["value"]["minLength"] == 1
    assert components["CollectorCreateRequest"]["properties"]["name"]["minLength"] == 1
    data = components["IngestionBodyRequest"]["properties"]["data"]
    assert {option["type"] for option in data["oneOf"]} == {"object", "array", "string"}
    assert len(components["MeterCreateRequest"]["oneOf"]) == 2
    for path, operations in paths.items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                assert parameter["allowEmptyValue"] is True, (path, method, parameter["name"])
                if parameter["schema"].get("type") == "string":
                    assert parameter["schema"]["pattern"] == "^[^\\u0000]*$", (path, method)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"data": [{"id": "a", "v": 1}, {"id": "b", "v": 1, "v": 2},'
            b' {"id": "c", "n": {"x": 1, "x": 2}}, {"id": "d", "v": 3}]}',
            "application/json",
        ),
        (
            b'{"id": "a", "v": 1}\n{"id": "b", "v": 1, "v": 2}\n'
            b'{"id": "c", "n": {"x": 1, "x": 2}}\n{"id": "d", "v": 3}\n',
            "application/x-ndjson",
        ),
        (
            b'{"data": "[{\\"id\\": \\"a\\", \\"v\\": 1}, {\\"id\\": \\"b\\", \\"v\\": 1,'
            b' \\"v\\": 2}, {\\"id\\": \\"c\\", \\"n\\": {\\"x\\": 1, \\"x\\": 2}},'
            b' {\\"id\\": \\"d\\", \\"v\\": 3}]"}',
            "application/json",
        ),
    ],
    ids=["array", "ndjson", "json text in data"],
)
def test_a_record_repeating_a_field_name_is_rejected_alone(
    acme, api_client, scene, body, content_type
):
    url = f"/online-collection/v1/collectors/{scene['collector'].pk}/data"
    response = api_client(acme.token).post(url, body, content_type=content_type)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["accepted"] == 2
    assert answer["rejected"] == [
        {"index": 1, "reason": "the field name 'v' appears twice"},
        {"index": 2, "reason": "the field name 'x' appears twice"},
    ]
    assert set(Record.objects.values_list("record_id", flat=True)) == {"a", "d"}
