"""Turning an ingestion body into envelope rows, without DRF serializers.

The body is decoded once with msgspec (JSON numbers with a fraction become Decimal, so
nothing is rounded), every record is checked in one pass, and each accepted record
becomes one row for COPY: the envelope in its own fields, the rest of the record
re-encoded as the payload with its numbers written exactly as they arrived.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collection.rules import (
    ENVELOPE_FIELDS,
    ENVELOPE_STRING_MAX_LENGTH,
    MAX_BATCH_RECORDS,
    MAX_RECORD_AGE,
    MAX_RECORD_LEAD,
)
from common.json import (
    MAX_DEPTH,
    InvalidJSON,
    encode,
    find_problem,
    loads_lenient,
    repeated_key_in,
    split_array,
    split_object,
)

NDJSON = "application/x-ndjson"

_ENVELOPE = frozenset(ENVELOPE_FIELDS)


class BodyError(Exception):
    """The body cannot be read as records (400). `field` names the offending record."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class TooManyRecords(Exception):
    """More records than one batch may hold (413)."""


def _decode(raw: bytes | str) -> Any:
    # Lenient: a record holding a number PostgreSQL cannot store is refused on its own
    # (prepare_records), not the whole body.
    return loads_lenient(raw)


class ParsedBody(list):
    """The records of a body, in order, and the ones refused while reading them
    ({index: reason}; such an index holds an empty placeholder): a record that repeats
    a field name (msgspec would keep only the last value), or that well-formed JSON
    holds but Tally cannot read (an integer past Python's digit limit)."""

    def __init__(self, records: list[dict[str, Any]], refused: dict[int, str]) -> None:
        super().__init__(records)
        self.refused = refused


def parse_body(body: bytes, content_type: str) -> ParsedBody:
    """The records in `body`: `{"data": object | array | string}` or NDJSON lines.

    Each record keeps its own JSON text until it is decoded (msgspec splits arrays
    without decoding them), so that a record can be refused alone.
    """
    if content_type == NDJSON:
        texts = [line for line in body.split(b"\n") if line.strip()]
        if len(texts) > MAX_BATCH_RECORDS:
            raise TooManyRecords

        def where(index: int) -> str:
            return f"Line {index + 1}: "
    else:
        texts = _record_texts(body)

        def where(index: int) -> str:
            return ""

    if not texts:
        raise BodyError("Send at least one record.", "data")
    if len(texts) > MAX_BATCH_RECORDS:
        raise TooManyRecords
    records: list[dict[str, Any]] = []
    refused: dict[int, str] = {}
    for index, text in enumerate(texts):
        try:
            record = _decode(text)
        except InvalidJSON as exc:
            if content_type == NDJSON:  # a line that is not JSON: the body is malformed
                raise BodyError(f"{where(index)}{exc.message}", f"data[{index}]") from None
            # The array was split as valid JSON: only this record cannot be read.
            refused[index] = exc.message
            records.append({})
            continue
        if not isinstance(record, dict):
            raise BodyError("Each record must be a JSON object.", f"data[{index}]")
        name = repeated_key_in(text, record)
        if name is not None:
            refused[index] = f"the field name {name!r} appears twice"
        records.append(record)
    return ParsedBody(records, refused)


def _record_texts(body: bytes) -> list[bytes]:
    if not body.strip():
        raise BodyError('The body is empty; send {"data": …}.')
    try:
        document = split_object(body)
    except InvalidJSON as exc:
        raise BodyError(exc.message) from None
    if document is None or "data" not in document:
        raise BodyError('The body must be a JSON object with a "data" field.', "data")
    unknown = sorted(set(document) - {"data"})
    if unknown:
        raise BodyError("Unknown field.", unknown[0])
    data = document["data"].strip()
    if data.startswith(b'"'):  # a string holding the JSON
        text = _decode(data)
        data = text.encode("utf-8", "surrogatepass").strip()
        if not data.startswith((b"{", b"[")):
            try:
                _decode(data)
            except InvalidJSON as exc:
                raise BodyError(f"The string in data: {exc.message}", "data") from None
    if data.startswith(b"{"):
        return [data]
    if data.startswith(b"["):
        try:
            items = split_array(data)
        except InvalidJSON as exc:
            raise BodyError(f"The string in data: {exc.message}", "data") from None
        return items or []
    raise BodyError(
        "Must be a JSON object, an array of objects, or a string holding either.", "data"
    )


@dataclass
class PreparedBatch:
    """Rows ready for COPY, and what was refused before reaching the database."""

    rows: list[tuple[str, datetime, str, str, str, str]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Later occurrences of an id already in this batch.
    duplicates: int = 0


def _event_time(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if isinstance(value, bool):
        raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("timestamp is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("timestamp is not an ISO 8601 date and time") from None
        # No offset means UTC, the only zone Tally stores.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds")


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value) > ENVELOPE_STRING_MAX_LENGTH:
        raise ValueError(f"{name} is longer than {ENVELOPE_STRING_MAX_LENGTH} characters")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")
    return value


def prepare_records(records: list[dict[str, Any]], now: datetime) -> PreparedBatch:
    """Validate every record's envelope and build its COPY row (one pass, no queries).

    A record with a bad envelope is rejected with its index and reason; the others go
    on. A record id repeated within the batch is kept once.
    """
    batch = PreparedBatch()
    oldest, newest = now - MAX_RECORD_AGE, now + MAX_RECORD_LEAD
    seen: set[str] = set()

    refused = getattr(records, "refused", {})
    for index, record in enumerate(records):
        try:
            if index in refused:
                raise ValueError(refused[index])
            if "id" in record:
                record_id = _text(record, "id")
                if not record_id:
                    raise ValueError("id must not be empty")
            else:
                record_id = str(uuid.uuid4())
            event_time = _event_time(record.get("timestamp"), now)
            if event_time < oldest:
                raise ValueError("timestamp is more than 35 days in the past")
            if event_time > newest:
                raise ValueError("timestamp is more than 5 minutes in the future")
            payload = {key: value for key, value in record.items() if key not in _ENVELOPE}
            try:
                encoded = encode(payload).decode()
            except TypeError:  # an unstorable number left by the lenient decoder
                where, why = find_problem(payload) or ("", "cannot be stored")
                raise ValueError(f"{where}: {why}") from None
            if "\\u0000" in encoded:
                raise ValueError("the record contains a NUL character")
            # Counting brackets is cheap; only a record with enough of them to be too
            # deep is walked (find_problem ignores brackets inside strings).
            if encoded.count("[") + encoded.count("{") > MAX_DEPTH:
                problem = find_problem(payload)
                if problem is not None:
                    raise ValueError(f"{problem[0]}: {problem[1]}")
            row = (
                record_id,
                event_time,
                _text(record, "type"),
                _text(record, "customerId"),
                _text(record, "accountId"),
                encoded,
            )
        except ValueError as exc:
            batch.rejected.append({"index": index, "reason": str(exc)})
            continue
        if record_id in seen:
            batch.duplicates += 1
            continue
        seen.add(record_id)
        batch.rows.append(row)
    return batch
