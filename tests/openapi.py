"""The OpenAPI document as /api/schema/ serves it, and answers checked against it made
strict (no undocumented key, date-times in the API's millisecond UTC form), for the
schema tests of every resource."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import jsonschema
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

MILLISECOND_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def openapi_document() -> dict:
    """The document /api/schema/ serves, built in-process and read back as JSON."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema, renderer_context={}))


def resolved(node: Any, schemas: dict) -> Any:
    """`node` with every `$ref` replaced by a copy of what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            return resolved(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
        return {key: resolved(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, schemas) for value in node]
    return node


def strict(node: Any, *, required: bool = True, optional: Iterable[str] = ()) -> Any:
    """A schema tightened: objects take no undocumented key and (with `required`) need
    every documented one but `optional`; date-times are the API's millisecond UTC form;
    nullable becomes JSON Schema's own null type."""
    optional = frozenset(optional)
    if isinstance(node, list):
        return [strict(value, required=required, optional=optional) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value, required=required, optional=optional) for key, value in node.items()}
    if "properties" in node:
        node["additionalProperties"] = False
        if required:
            node["required"] = sorted(set(node["properties"]) - optional)
    if node.get("format") == "date-time":
        node["pattern"] = MILLISECOND_UTC
    if node.pop("nullable", False):
        if "type" in node:
            node["type"] = [node["type"], "null"]
        elif "allOf" in node:
            node = {"anyOf": [{"allOf": node.pop("allOf")}, {"type": "null"}], **node}
    return node


def problems(schema: dict, body: Any) -> list[str]:
    """Where `body` breaks `schema`, one line each."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(body)
    ]
