"""Thresholds in their stored form, with names and custom fields; alerts remember theirs.

Before: `{"value": "800"}` or `{"capacityPercentage": "80"}` (numbers as strings, or as
JSON numbers from the ORM). After: `{"kind": "absoluteValue" | "capacityPercentage",
"number": "800"}` as metering.thresholds stores it. Alert keys follow ("value:800" →
"absoluteValue:800"), so a threshold that already fired this period does not fire again.
Items already in the new form are left as they are, so running it twice changes nothing.
"""

from decimal import Decimal

from django.db import migrations, models

import common.json

KINDS = {
    "value": "absoluteValue",
    "absoluteValue": "absoluteValue",
    "capacityPercentage": "capacityPercentage",
}


def _plain(number) -> str:
    return format(Decimal(str(number)).normalize(), "f")


def _convert(items):
    converted = []
    for item in items:
        if "kind" in item:
            converted.append(item)
            continue
        (key,) = [key for key in item if key in KINDS]
        stored = {"kind": KINDS[key], "number": _plain(item[key])}
        for extra in ("name", "customFields"):
            if item.get(extra) is not None:
                stored[extra] = item[extra]
        converted.append(stored)
    return converted


def forwards(apps, schema_editor):
    for model_name in ("MeterType", "Meter"):
        model = apps.get_model("metering", model_name)
        rows = model.objects.exclude(thresholds__isnull=True).exclude(thresholds=[])
        for row in rows.only("pk", "thresholds").iterator():
            converted = _convert(row.thresholds)
            if converted != row.thresholds:
                model.objects.filter(pk=row.pk).update(thresholds=converted)


def backwards(apps, schema_editor):
    for model_name in ("MeterType", "Meter"):
        model = apps.get_model("metering", model_name)
        rows = model.objects.exclude(thresholds__isnull=True).exclude(thresholds=[])
        for row in rows.only("pk", "thresholds").iterator():
            legacy = [
                {"value" if item["kind"] == "absoluteValue" else item["kind"]: item["number"]}
                for item in row.thresholds
            ]
            model.objects.filter(pk=row.pk).update(thresholds=legacy)


ALERT_KEYS = """
UPDATE metering_alert SET threshold_key = 'absoluteValue:' || substr(threshold_key, 7)
WHERE threshold_key LIKE 'value:%';
UPDATE metering_alert
SET threshold = jsonb_build_object('kind', split_part(threshold_key, ':', 1),
                                   'number', split_part(threshold_key, ':', 2))
WHERE threshold = '{}'::jsonb;
"""
ALERT_KEYS_BACK = """
UPDATE metering_alert SET threshold_key = 'value:' || substr(threshold_key, 15)
WHERE threshold_key LIKE 'absoluteValue:%' AND threshold_key NOT LIKE '%#%';
"""


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0003_hot_update_fillfactor"),
    ]

    operations = [
        migrations.AddField(
            model_name="alert",
            name="threshold",
            field=models.JSONField(
                decoder=common.json.ExactJSONDecoder,
                default=dict,
                encoder=common.json.ExactJSONEncoder,
            ),
        ),
        migrations.AddField(
            model_name="alert",
            name="threshold_name",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AlterField(
            model_name="alert",
            name="threshold_key",
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name="meter",
            name="custom_fields",
            field=models.JSONField(
                blank=True,
                decoder=common.json.ExactJSONDecoder,
                default=dict,
                encoder=common.json.ExactJSONEncoder,
            ),
        ),
        migrations.AlterField(
            model_name="meter",
            name="thresholds",
            field=models.JSONField(
                blank=True,
                decoder=common.json.ExactJSONDecoder,
                encoder=common.json.ExactJSONEncoder,
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="metertype",
            name="thresholds",
            field=models.JSONField(
                blank=True,
                decoder=common.json.ExactJSONDecoder,
                default=list,
                encoder=common.json.ExactJSONEncoder,
            ),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RunSQL(ALERT_KEYS, ALERT_KEYS_BACK),
    ]
