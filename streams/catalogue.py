"""The catalogue of stream functions Tally understands, and the checks made on a node's params.

A stream arrives as an export of the reference product (Usage Engine): a list of nodes, each
naming a function `type` and carrying that function's `params`, and a list of edges between
them. This module is the single place that says which types exist, how many inputs and
outputs each has, and what its params must look like, so that import, the API and the
runtime agree.

The params schemas are written against real exports (the six streams in
`shared/fixtures/usage-engine-streams`) and the reference product's documentation. They are
deliberately open (`additionalProperties: true` at the params level): the reference product
adds keys between releases (the node `schemaVersion` of `transforms/http` is 9 in one export
and 11 in another) and an import must not fail on a key Tally simply does not use. What *is*
checked is the shape of every key Tally reads, and, where every real export carries it, its
presence.

How outputs are encoded, as the exports show it:

* Most functions have one output, and an edge leaving them carries no `output` key at all.
* A function with several outputs lists them in `params.multiOutput`, in one of two shapes:

  - `{"fixed": {"<name>": {"id": "<uuid>"}, ...}}` for outputs the function defines itself
    (the meter's `reset` and `threshold`, deduplicate's `unique`);
  - `{"configurable": {"outputs": [{"id": "<uuid>", "name": "<label>"}, ...]}}` for outputs
    the user adds (split's routes).

  An edge leaving such a node names the output by its *id*, never by its name, and the ids are
  only unique within their node: two split nodes of one export share an output id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

KINDS: Final = ("reader", "transform", "writer")
OUTPUT_SHAPES: Final = ("none", "single", "fixed", "configurable")


@dataclass(frozen=True)
class FunctionSpec:
    """What Tally knows about one function type."""

    type: str
    kind: str  # "reader" | "transform" | "writer"
    description: str  # one line, for the catalogue API
    inputs: int  # 0 for readers, 1 otherwise
    outputs: str  # "none" (writers) | "single" | "fixed" | "configurable"
    # Names of the outputs a "fixed" function defines. Informative only: edges name outputs by
    # id, and `declared_outputs` reads whatever the node declares (see deduplicate below).
    fixed_outputs: tuple[str, ...] = ()
    params_schema: dict[str, Any] = field(default_factory=dict)


# --- Schema building blocks ------------------------------------------------------------------

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NON_EMPTY_STRING: Final = {"type": "string", "minLength": 1}
_NON_NEGATIVE_INTEGER: Final = {"type": "integer", "minimum": 0}
# Comparison operands and meter condition values are typed by the user (the meter's
# documentation lets a condition be a string, a number or a boolean); exports store the split
# operands as strings ("90"), yet nothing stops a hand-written stream from using numbers.
_SCALAR: Final = {"type": ["string", "number", "boolean", "null"]}
# An aggregator's timeout: a whole number of units.
_TIMEOUT: Final = {
    "type": "object",
    "properties": {
        "value": {"type": "integer", "minimum": 1},
        "unit": {"enum": ["SECONDS", "MINUTES", "HOURS", "DAYS"]},
    },
    "required": ["value", "unit"],
}


def _params(
    properties: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
    *,
    title: str,
    open_: bool = True,
) -> dict[str, Any]:
    """A params schema: an object, open to keys we do not know unless `open_` is False."""
    schema: dict[str, Any] = {
        "$schema": _DIALECT,
        "title": title,
        "type": "object",
        "properties": properties or {},
        "additionalProperties": open_,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _fixed_outputs(*names: str) -> dict[str, Any]:
    """`multiOutput` of a function with fixed outputs; the listed names must be present.

    Other names are allowed: the reference product can add an output to a function (the
    deduplicate documentation describes an optional second channel for duplicates) and its id
    must then be accepted on edges, not rejected here.
    """
    output = {
        "type": "object",
        "properties": {"id": _NON_EMPTY_STRING},
        "required": ["id"],
    }
    return {
        "type": "object",
        "properties": {
            "fixed": {
                "type": "object",
                "additionalProperties": output,
                "required": list(names),
            }
        },
        "required": ["fixed"],
    }


_CONFIGURABLE_OUTPUTS: Final = {
    "type": "object",
    "properties": {
        "configurable": {
            "type": "object",
            "properties": {
                "outputs": {
                    "type": "array",
                    # A split with no route would drop every record; the editor never
                    # exports one, so an empty list means a broken or hand-made file.
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {"id": _NON_EMPTY_STRING, "name": {"type": "string"}},
                        "required": ["id"],
                    },
                }
            },
            "required": ["outputs"],
        }
    },
    "required": ["configurable"],
}

# Both validate and the meter carry suspense settings; only `enabled` is always there.
_SUSPENSE_MANAGEMENT: Final = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "abortOnDisabled": {"type": "boolean"},
        "eventThreshold": _NON_NEGATIVE_INTEGER,
        "onThresholdExceeded": {"type": "string"},
        "resetOnValidEvent": {"type": "boolean"},
    },
}


# --- The functions ---------------------------------------------------------------------------

_SPECS: Final[tuple[FunctionSpec, ...]] = (
    # Readers ---------------------------------------------------------------------------------
    FunctionSpec(
        type="readers/counter",
        kind="reader",
        description="Emits `max` records numbered from 1, to start a stream or feed test data.",
        inputs=0,
        outputs="single",
        params_schema=_params(
            # The only key, in every export; the scripts downstream read `payload.value`.
            {"max": {"type": "integer", "minimum": 1}},
            ("max",),
            title="Counter",
        ),
    ),
    FunctionSpec(
        type="readers/online_collection",
        kind="reader",
        description="Tally's own source: the records received by one of the operator's collectors.",
        inputs=0,
        outputs="single",
        params_schema=_params(
            {"collectorId": {"type": "string", "format": "uuid"}},
            ("collectorId",),
            title="Online collection",
            # Tally defines this function, so every key is known: anything else is a mistake
            # worth reporting rather than a newer release of somebody else's product.
            open_=False,
        ),
    ),
    # Transforms ------------------------------------------------------------------------------
    FunctionSpec(
        type="transforms/map",
        kind="transform",
        description="Builds a new record from selected fields of the input, renaming them.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                # A list of one-entry objects, {"<output field>": "<input field path>"},
                # rather than one object: the same output field may be listed twice (one
                # export maps both `customer` and `customFields.customer` to `customer`), and
                # the order decides which one wins.
                "mappings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "minProperties": 1,
                        "maxProperties": 1,
                        "additionalProperties": {"type": "string"},
                    },
                }
            },
            ("mappings",),
            title="Map",
        ),
    ),
    FunctionSpec(
        type="transforms/xmap",
        kind="transform",
        description="Sets fields from expressions over the input, optionally keeping the rest.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                "keepFields": {
                    "type": "object",
                    "properties": {"enabled": {"type": "boolean"}},
                    "required": ["enabled"],
                },
                "mappings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": _NON_EMPTY_STRING,
                            # The text is the source of truth; `ast` is the editor's parse of
                            # it, kept as exported but not relied on.
                            "expression": {"type": "string"},
                            "ast": {"type": "array"},
                            "errorMessage": {"type": ["string", "null"]},
                        },
                        "required": ["field", "expression"],
                    },
                },
            },
            ("keepFields", "mappings"),
            title="Expression map",
        ),
    ),
    FunctionSpec(
        type="transforms/script",
        kind="transform",
        description="Runs user JavaScript on each record; it may push zero, one or many records.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                "transform": {"type": "string"},
                # Older exports carry a second block, run once when the input is exhausted.
                "flush": {"type": "string"},
            },
            ("transform",),
            title="Script",
        ),
    ),
    FunctionSpec(
        type="transforms/script_aggregate",
        kind="transform",
        description="Groups records into sessions and folds each with user JavaScript.",
        inputs=1,
        outputs="single",
        # No export of this function has been published, only its documentation (group-by
        # rules, a flush trigger, transform and timeout scripts), which does not show the
        # key names. These are Tally's (README, "Running streams"); nothing is required at import so
        # that an export spelling them differently still imports, and the runtime names
        # what is missing when the node runs.
        params_schema=_params(
            {
                "groupByRules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "fields": {"type": "array", "minItems": 1, "items": _NON_EMPTY_STRING}
                        },
                        "required": ["fields"],
                    },
                },
                "onTransform": {"type": "string"},
                "onTimeout": {"type": "string"},
                "timeout": _TIMEOUT,
            },
            title="Script aggregator",
        ),
    ),
    FunctionSpec(
        type="transforms/validate",
        kind="transform",
        description="Checks each record against a JSON Schema; failures go to suspense.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                # A JSON Schema of the record, written by the user. It is not checked against
                # a metaschema here: the reference product accepts draft-07 style schemas and
                # Tally reports an unusable one when it compiles it.
                "schema": {"type": "object"},
                "suspenseManagement": _SUSPENSE_MANAGEMENT,
            },
            ("schema",),
            title="Validate",
        ),
    ),
    FunctionSpec(
        type="transforms/deduplicate",
        kind="transform",
        description="Passes on the first record per key and drops repeats seen within N days.",
        inputs=1,
        outputs="fixed",
        fixed_outputs=("unique",),
        params_schema=_params(
            {
                # A template such as "${payload.printerId}"; "${}" means the whole record.
                "key": {"type": "string"},
                "lifeTimeDays": {"type": "integer", "minimum": 1},
                # Exports before the multi-output rework had no `multiOutput` and plain
                # edges; every export Tally supports has it, and routing depends on it.
                "multiOutput": _fixed_outputs("unique"),
            },
            ("key", "lifeTimeDays", "multiOutput"),
            title="Deduplicate",
        ),
    ),
    FunctionSpec(
        type="transforms/split",
        kind="transform",
        description="Routes records to its outputs by rules comparing a field with a value.",
        inputs=1,
        outputs="configurable",
        params_schema=_params(
            {
                "multiOutput": _CONFIGURABLE_OUTPUTS,
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            # A template: exports use both "${payload.x}" and "@{payload.x}".
                            "key": {"type": "string"},
                            "op": _NON_EMPTY_STRING,
                            "value": _SCALAR,
                            # The id of one of `multiOutput.configurable.outputs`.
                            "output": _NON_EMPTY_STRING,
                        },
                        "required": ["key", "op", "output"],
                    },
                },
                # What happens to a record no rule matches ("discard" in every export).
                "onNoMatch": {"type": "string"},
            },
            ("multiOutput", "rules", "onNoMatch"),
            title="Split",
        ),
    ),
    FunctionSpec(
        type="transforms/date",
        kind="transform",
        description="Parses, shifts or sets parts of date fields and reformats them.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": _NON_EMPTY_STRING,
                            "mode": _NON_EMPTY_STRING,
                            # moment.js style patterns, e.g. "YYYY-MMM-DD".
                            "inputFormat": {"type": "string"},
                            "outputFormat": {"type": "string"},
                            # Per unit ("hour", "minute", ...): {"mode": "set", "value": 23}.
                            "operation": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "object",
                                    "properties": {
                                        "mode": {"type": "string"},
                                        "value": {"type": "number"},
                                    },
                                },
                            },
                        },
                        "required": ["field", "mode"],
                    },
                }
            },
            ("items",),
            title="Date",
        ),
    ),
    FunctionSpec(
        type="transforms/meter",
        kind="transform",
        description="Adds usage to the meters its guiding rules pick; emits resets and thresholds.",
        inputs=1,
        outputs="fixed",
        # `reset` carries a meter's record when its period ends (the flush); `threshold` one
        # when usage crosses a threshold of the meter type.
        fixed_outputs=("reset", "threshold"),
        params_schema=_params(
            {
                "flushType": {"type": "string"},
                "guidingRules": {
                    "type": "array",
                    # The documentation asks for at least one rule and allows ten.
                    "minItems": 1,
                    "maxItems": 10,
                    "items": {
                        "type": "object",
                        "properties": {
                            "customName": {"type": "string"},
                            # The meter-type category whose meters receive the usage.
                            "matchCategory": _NON_EMPTY_STRING,
                            # True for "no condition": `conditions` is then an unused
                            # placeholder (empty field and value in the export).
                            "ignoreCondition": {"type": "boolean"},
                            "conditionRelation": {"enum": ["and", "or"]},
                            "conditions": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "field": {"type": "string"},
                                        "value": _SCALAR,
                                        "customName": {"type": "string"},
                                    },
                                },
                            },
                            "groupBy": {"type": "array"},
                            "otherOperations": {"type": "array"},
                        },
                        "required": ["matchCategory"],
                    },
                },
                "multiOutput": _fixed_outputs("reset", "threshold"),
                "suspenseManagement": _SUSPENSE_MANAGEMENT,
            },
            ("flushType", "guidingRules", "multiOutput"),
            title="Meter",
        ),
    ),
    FunctionSpec(
        type="transforms/data_aggregate",
        kind="transform",
        description="Groups records by key fields and periods and emits one aggregate per group.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                # When groups are emitted: "EACH_FILE" and "ALL_FILES" in the exports;
                # "TIMEOUT" and "CONDITION" as the flushed records' meta names them.
                "flushType": {"enum": ["EACH_FILE", "ALL_FILES", "TIMEOUT", "CONDITION"]},
                "timeout": _TIMEOUT,
                "conditionalFlushConfig": {
                    "type": "object",
                    "properties": {
                        "relation": {"enum": ["and", "or"]},
                        "conditions": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": _NON_EMPTY_STRING,
                                    "op": _NON_EMPTY_STRING,
                                    "value": _SCALAR,
                                },
                                "required": ["field", "op"],
                            },
                        },
                    },
                },
                "groupKeys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": _NON_EMPTY_STRING,
                            # "NONE" groups on the value itself, "MONTH" etc. on its period.
                            "operationType": {"enum": ["NONE", "HOUR", "DAY", "MONTH", "YEAR"]},
                            # Output field name; without it the reference product derives one
                            # ("month_timestamp" from MONTH of "timestamp").
                            "alias": {"type": "string"},
                        },
                        "required": ["field", "operationType"],
                    },
                },
                "operations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": _NON_EMPTY_STRING,
                            # The output field is named after it ("sum_view_duration",
                            # "carry_last_plan") unless aliased.
                            "type": {
                                "enum": [
                                    "NUMERIC_SUM",
                                    "NUMERIC_AVERAGE",
                                    "NUMERIC_MIN",
                                    "NUMERIC_MAX",
                                    "GENERAL_COUNT",
                                    "GENERAL_CARRY_FIRST",
                                    "GENERAL_CARRY_LAST",
                                ]
                            },
                            "alias": {"type": "string"},
                        },
                        "required": ["field", "type"],
                    },
                },
            },
            ("flushType", "groupKeys", "operations"),
            title="Data aggregator",
        ),
    ),
    FunctionSpec(
        type="transforms/http",
        kind="transform",
        description="Calls an HTTP API for each record and passes on the record with the response.",
        inputs=1,
        outputs="single",
        params_schema=_params(
            {
                # May hold templates, e.g. ".../meters/${payload.meter.id}".
                "uri": _NON_EMPTY_STRING,
                "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
                # Query-string parameters, values possibly templated.
                "qs": {"type": "object", "additionalProperties": {"type": "string"}},
                # A template of the request body, e.g. "${payload.meter}".
                "body": {"type": "string"},
                "errorMode": {"type": "string"},
                "shouldRetry": {"type": "boolean"},
                "retries": _NON_NEGATIVE_INTEGER,
                "useCache": {"type": "boolean"},
                "cacheSeconds": _NON_NEGATIVE_INTEGER,
                "useMockData": {"type": "boolean"},
                "useResponseHeaderKey": {"type": "boolean"},
                "authType": {"type": "string"},
                # The OAuth2 grant ("client_credentials", "password"); credentials themselves
                # are never in an export.
                "authentication": {"type": "string"},
                "oAuth2Authentication": {
                    "type": "object",
                    "properties": {
                        "accessTokenURL": {"type": "string"},
                        "audience": {"type": "string"},
                        "clientAuthentication": {"type": "string"},
                        "headerPrefix": {"type": "string"},
                    },
                },
            },
            ("uri", "method"),
            title="HTTP client",
        ),
    ),
    # Writers ---------------------------------------------------------------------------------
    FunctionSpec(
        type="writers/log",
        kind="writer",
        description="Writes each record to the stream's log.",
        inputs=1,
        outputs="none",
        # `{}` in current exports; older ones carry an unused `"key": ""`.
        params_schema=_params(title="Log"),
    ),
    FunctionSpec(
        type="writers/noop",
        kind="writer",
        description="Accepts records and discards them, to end a branch.",
        inputs=1,
        outputs="none",
        params_schema=_params(title="No operation"),
    ),
)

FUNCTIONS: Final[dict[str, FunctionSpec]] = {spec.type: spec for spec in _SPECS}

# Compiled once: the schemas are constants and a stream may hold many nodes. The format
# checker is what makes `"format": "uuid"` an assertion rather than an annotation.
_VALIDATORS: Final[dict[str, Draft202012Validator]] = {}
for _spec in _SPECS:
    # The API and the runtime branch on these fields; a slip would surface far from here.
    assert _spec.kind in KINDS and _spec.outputs in OUTPUT_SHAPES, _spec.type
    assert _spec.inputs == (0 if _spec.kind == "reader" else 1), _spec.type
    assert (_spec.outputs == "none") == (_spec.kind == "writer"), _spec.type
    assert bool(_spec.fixed_outputs) == (_spec.outputs == "fixed"), _spec.type
    Draft202012Validator.check_schema(_spec.params_schema)  # a typo here fails at import
    _VALIDATORS[_spec.type] = Draft202012Validator(
        _spec.params_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


# --- Checks ----------------------------------------------------------------------------------


def params_problems(node_type: str, params: Any) -> list[str]:
    """Everything wrong with `params` for a node of `node_type`, one message per problem.

    Each message starts with the JSON path of the offending value inside the node, e.g.
    `params.mappings[0]: ...`, so a stream author can find it. An empty list means the params
    are acceptable. Raises KeyError for a type not in the catalogue: the caller decides how an
    unknown function is reported.
    """
    validator = _VALIDATORS[node_type]
    errors = sorted(validator.iter_errors(params), key=_error_order)
    return [f"{_path(error)}: {error.message}" for error in errors]


def declared_outputs(node: dict[str, Any]) -> set[str] | None:
    """The output ids an edge leaving `node` may name, or None if the node has one output.

    For a function with fixed or configurable outputs, these are the `id`s listed in the
    node's `params.multiOutput` (whatever their names), and every edge leaving the node must
    name one of them in its `output`: all 13 such edges in the reference exports do.

    None means the function has a single output (or none, for a writer). Edges leaving such a
    node carry no `output` key: none of the 45 such edges in the reference exports has one. A
    value there is meaningless, so it is not checked; a caller may reject it as noise.

    Malformed params yield only the well-formed ids (an empty set if none); `params_problems`
    reports what is wrong. An unknown type also yields None, as there is nothing to route and
    the caller reports the type itself.
    """
    spec = FUNCTIONS.get(node.get("type"))
    if spec is None or spec.outputs not in ("fixed", "configurable"):
        return None
    params = node.get("params")
    multi = params.get("multiOutput") if isinstance(params, dict) else None
    if not isinstance(multi, dict):
        return set()
    if spec.outputs == "fixed":
        fixed = multi.get("fixed")
        entries = list(fixed.values()) if isinstance(fixed, dict) else []
    else:
        configurable = multi.get("configurable")
        outputs = configurable.get("outputs") if isinstance(configurable, dict) else None
        entries = outputs if isinstance(outputs, list) else []
    return {
        entry["id"]
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]
    }


def catalogue_json() -> list[dict[str, Any]]:
    """The catalogue as the API serves it, sorted by type so the answer is stable."""
    return [
        {
            "type": spec.type,
            "kind": spec.kind,
            "description": spec.description,
            "inputs": spec.inputs,
            "outputs": spec.outputs,
            "fixedOutputs": list(spec.fixed_outputs),
            "paramsSchema": spec.params_schema,
        }
        for spec in sorted(_SPECS, key=lambda spec: spec.type)
    ]


def _path(error: ValidationError) -> str:
    """`params.rules[0].output`; keys that are not plain names are quoted, `params["a.b"]`."""
    text = "params"
    for part in error.absolute_path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}"
        else:
            text += '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return text


def _error_order(error: ValidationError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    # Paths mix list indexes and object keys, which Python will not compare with each other;
    # tag each part so indexes sort numerically and before keys. The message breaks ties so
    # the order never depends on the schema's dict order.
    parts = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part))
        for part in error.absolute_path
    )
    return parts, error.message
