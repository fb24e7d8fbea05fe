"""DRF's renderer, over common.json: exact decimals, millisecond UTC timestamps."""

from __future__ import annotations

from typing import Any

from rest_framework.renderers import JSONRenderer

from common.json import dumps


class DecimalJSONRenderer(JSONRenderer):
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)
