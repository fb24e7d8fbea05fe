"""OpenAPI additions drf-spectacular cannot derive for parameters."""

from __future__ import annotations

from parameters.rules import MAX_PARAMETERS_PER_OPERATOR

BULK_DELETE_PATH = "/global-parameters/v1/parameters"


def add_bulk_delete_body(result, generator, request, public):
    """drf-spectacular postprocessing hook: DELETE /parameters takes a body (the names to
    delete), which drf-spectacular leaves out for DELETE; without one it is a 400."""
    operation = result.get("paths", {}).get(BULK_DELETE_PATH, {}).get("delete")
    if operation is not None:
        schema = {
            "type": "object",
            "properties": {
                "parameters": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": MAX_PARAMETERS_PER_OPERATOR,
                }
            },
            "required": ["parameters"],
            "additionalProperties": False,
        }
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    return result
