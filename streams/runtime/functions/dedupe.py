"""`transforms/deduplicate`: the first record per key goes on through `unique`; repeats
within `lifeTimeDays` are dropped (and counted: the node's in/out counters show them).

Seen keys live in PostgreSQL (`DedupeKey`, the MD5 of stream, node and key). Claiming a
key is one INSERT … ON CONFLICT that also takes over an expired row, so of two workers
racing for one key exactly one sees it as new; and it is part of the batch's
transaction, so a failed or retried batch claims nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from typing import Any

from django.db import connection

from common.json import encode
from streams.models import DedupeKey
from streams.runtime.base import Emit, Function, Item, fixed_output_id, function
from streams.runtime.paths import render_template


def _key_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return encode(value).decode()


@function("transforms/deduplicate")
class DeduplicateFunction(Function):
    def process(self, items: list[Item], emit: Emit) -> None:
        template = str(self.params.get("key") or "${}")
        days = int(self.params.get("lifeTimeDays") or 1)
        output = fixed_output_id(self.ctx.node, "unique")
        prefix = f"{self.ctx.stream_id}:{self.ctx.node_id}:"
        first: dict[uuid.UUID, Item] = {}  # the batch's first record per key
        whole = template.strip() in ("", "${}", "@{}")
        for item in items:
            try:
                value = item.payload if whole else render_template(template, item.payload)
                key = _key_text(value)
            except ValueError as exc:
                emit.fail(item, str(exc))
                continue
            digest = uuid.UUID(bytes=hashlib.md5((prefix + key).encode()).digest())  # noqa: S324
            first.setdefault(digest, item)
        if not first:
            return
        expires = self.ctx.now + datetime.timedelta(days=days)
        fresh = self._claim(sorted(first), expires)
        for digest, item in first.items():
            if digest in fresh:
                emit(item, output)

    def _claim(self, digests: list[uuid.UUID], expires: datetime.datetime) -> set[uuid.UUID]:
        table = DedupeKey._meta.db_table
        with connection.cursor() as cursor:
            if not self.ctx.side_effects:
                cursor.execute(
                    f"SELECT key_hash FROM {table} WHERE key_hash = ANY(%s) AND expires_at > %s",  # noqa: S608
                    [digests, self.ctx.now],
                )
                seen = {row[0] for row in cursor.fetchall()}
                return set(digests) - seen
            # Sorted keys: two workers claim overlapping keys in one order, no deadlock.
            cursor.execute(
                f"""
                INSERT INTO {table} AS d (key_hash, operator_id, stream_id, expires_at)
                SELECT k, %s, %s, %s FROM unnest(%s::uuid[]) AS k ORDER BY k
                ON CONFLICT (key_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE d.expires_at <= %s
                RETURNING key_hash
                """,  # noqa: S608 (our table)
                [self.ctx.operator_id, self.ctx.stream_id, expires, digests, self.ctx.now],
            )
            return {row[0] for row in cursor.fetchall()}
