"""The rules collectors and ingested records follow, shared by the API, services and admin."""

from __future__ import annotations

import re
from datetime import timedelta

NAME_PATTERN = re.compile(r"[\w\s().-]+")
NAME_MAX_LENGTH = 80
MAX_COLLECTORS_PER_OPERATOR = 5

MAX_BATCH_RECORDS = 10_000
MAX_BODY_BYTES = 5 * 1024 * 1024

# A record's event time may be at most this far in the past / future of its receipt.
MAX_RECORD_AGE = timedelta(days=35)
MAX_RECORD_LEAD = timedelta(minutes=5)

# A record id seen on a collector within this window is a duplicate.
DEDUP_WINDOW = timedelta(days=32)
# The envelope fields (DESIGN §7); everything else in a record is its payload.
ENVELOPE_FIELDS = ("id", "timestamp", "type", "customerId", "accountId")
ENVELOPE_STRING_MAX_LENGTH = 200

IDEMPOTENCY_KEY_MAX_LENGTH = 255


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid collector name, or None."""
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        return f"Must be 1 to {NAME_MAX_LENGTH} characters long."
    if not NAME_PATTERN.fullmatch(name):
        return "May contain only letters, digits, spaces and the characters - _ . ( )."
    return None
