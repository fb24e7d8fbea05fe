"""OpenAPI additions drf-spectacular cannot derive for metering."""

from __future__ import annotations


def meter_create_names_one_type(result, generator, request, public):
    """drf-spectacular postprocessing hook: a new meter names its type by id or by
    external reference, exactly one of the two."""
    schema = result.get("components", {}).get("schemas", {}).get("MeterCreateRequest")
    if schema is not None:
        schema["oneOf"] = [
            {"required": ["meterTypeId"], "not": {"required": ["meterTypeExternalRef"]}},
            {"required": ["meterTypeExternalRef"], "not": {"required": ["meterTypeId"]}},
        ]
    return result
