"""OpenAPI shapes of the stream endpoints' answers (the views build plain documents)."""

from __future__ import annotations

ACTOR = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["application", "user"]},
        "id": {"type": "string"},
        "name": {"type": "string"},
    },
}
# A stream: its settings plus its configuration in the export format. Nodes and edges
# keep every key the export had, so they are open objects.
STREAM = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "solutionId": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "processingType": {"type": "string", "enum": ["realtime", "batch"]},
        "enabled": {"type": "boolean"},
        "schedule": {"type": "string", "nullable": True},
        "schemaVersion": {"type": "integer"},
        "tag": {"type": "string", "nullable": True},
        "cas": {"type": "integer"},
        "createdAt": {"type": "string", "format": "date-time"},
        "createdBy": ACTOR,
        "updatedAt": {"type": "string", "format": "date-time"},
        "updatedBy": ACTOR,
        "annotation": {"type": "object", "additionalProperties": True},
        "nodes": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "edges": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "nodeGroups": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": True},
        },
    },
    "additionalProperties": True,
}
EXPORT = {
    "type": "object",
    "description": "The stream configuration in the export format, with generated keys.",
    "properties": {key: STREAM["properties"][key] for key in ("name", "nodes", "edges")},
    "required": ["name", "nodes"],
    "additionalProperties": True,
}
STREAM_LIST = {
    "type": "object",
    "properties": {
        "streams": {"type": "array", "items": STREAM},
        "nextCursor": {"type": "string", "nullable": True},
    },
    "required": ["streams", "nextCursor"],
}
VERSIONS = {
    "type": "object",
    "properties": {
        "total": {"type": "integer"},
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "tag": {"type": "string"},
                    "schemaVersion": {"type": "integer"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "createdBy": ACTOR,
                },
            },
        },
    },
    "required": ["total", "versions"],
}
IMPORT_RESULT = {
    "type": "object",
    "properties": {
        "importAction": {
            "type": "string",
            "enum": ["created", "overwritten", "created-new", "skipped"],
        },
        "stream": STREAM,
        "tag": {"type": "string", "nullable": True},
    },
    "required": ["importAction", "stream", "tag"],
}
FUNCTIONS = {
    "type": "object",
    "properties": {
        "functions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "kind": {"type": "string", "enum": ["reader", "transform", "writer"]},
                    "description": {"type": "string"},
                    "inputs": {"type": "integer"},
                    "outputs": {
                        "type": "string",
                        "enum": ["none", "single", "fixed", "configurable"],
                    },
                    "fixedOutputs": {"type": "array", "items": {"type": "string"}},
                    "paramsSchema": {"type": "object", "additionalProperties": True},
                },
                "required": ["type", "kind", "description", "paramsSchema"],
            },
        }
    },
    "required": ["functions"],
}
_COUNTS = {
    "type": "object",
    "properties": {key: {"type": "integer"} for key in ("in", "out", "failed")},
}
_ERROR = {
    "type": "object",
    "properties": {
        "nodeId": {"type": "string"},
        "nodeName": {"type": "string"},
        "reason": {"type": "string"},
    },
}
EXECUTION = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "streamId": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]},
        "trigger": {"type": "string", "enum": ["api", "admin", "schedule"]},
        "createdAt": {"type": "string", "format": "date-time"},
        "startedAt": {"type": "string", "format": "date-time", "nullable": True},
        "endedAt": {"type": "string", "format": "date-time", "nullable": True},
        "recordsRead": {"type": "integer"},
        "recordsFailed": {"type": "integer"},
        "nodes": {"type": "object", "additionalProperties": _COUNTS},
        "errors": {"type": "array", "items": _ERROR},
    },
}
EXECUTIONS = {
    "type": "object",
    "properties": {"executions": {"type": "array", "items": EXECUTION}},
    "required": ["executions"],
}
LOGS = {
    "type": "object",
    "properties": {
        "logs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "nodeId": {"type": "string"},
                    "nodeName": {"type": "string"},
                    "level": {"type": "string", "enum": ["info", "warn", "error"]},
                    "message": {"type": "string"},
                    "payload": {"nullable": True},
                    "createdAt": {"type": "string", "format": "date-time"},
                },
            },
        },
        "nextCursor": {"type": "integer", "nullable": True},
    },
    "required": ["logs"],
}
PREVIEW = {
    "type": "object",
    "properties": {
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "nodeId": {"type": "string"},
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "in": {"type": "integer"},
                    "out": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "inputs": {"type": "array", "items": {}},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "logs": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
        "failures": {"type": "array", "items": {"type": "object"}},
        "meterChanges": {"type": "array", "items": {"type": "object"}},
        "changes": {"type": "array", "items": {"type": "object"}},
    },
}
STORE = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The node's storeId."},
        "kind": {"type": "string", "enum": ["data", "script"]},
        "streamId": {"type": "string", "format": "uuid"},
        "streamName": {"type": "string"},
        "nodeId": {"type": "string"},
        "nodeName": {
            "type": "string",
            "nullable": True,
            "description": "null when the node is no longer in the stream's latest version.",
        },
        "groupFields": {
            "type": "array",
            "description": "The field lists session keys are made of, in key order: one "
            "for a data aggregator, one per group-by rule for a script aggregator.",
            "items": {"type": "array", "items": {"type": "string"}},
        },
        "sessionCount": {"type": "integer"},
        "createdAt": {"type": "string", "format": "date-time"},
    },
    "required": [
        "id",
        "kind",
        "streamId",
        "streamName",
        "nodeId",
        "nodeName",
        "groupFields",
        "sessionCount",
        "createdAt",
    ],
}
STORE_LIST = {
    "type": "object",
    "properties": {
        "stores": {"type": "array", "items": STORE},
        "nextCursor": {"type": "string", "nullable": True},
    },
    "required": ["stores", "nextCursor"],
}
SESSION = {
    "type": "object",
    "properties": {
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "timeoutAt": {"type": "string", "format": "date-time", "nullable": True},
        "data": {"type": "object", "additionalProperties": True},
        "meta": {
            "type": "object",
            "description": "count, firstEvent, lastEvent and any property a script set.",
            "additionalProperties": True,
        },
    },
    "required": ["createdAt", "updatedAt", "timeoutAt", "data", "meta"],
}
