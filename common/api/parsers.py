"""DRF's JSON parser, over common.json: numbers with a fraction become Decimal, and
anything PostgreSQL could not store (NUL, unstorable numbers, deep nesting) is a 400
naming where, before any view sees it."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from common.json import InvalidJSON, loads


class DecimalJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = stream.read() if stream is not None else b""
        if not raw:
            raise ParseError("The request body is empty; a JSON object is expected.")
        try:
            return loads(raw)
        except InvalidJSON as exc:
            raise ParseError({exc.where or "body": [exc.message]}) from None
