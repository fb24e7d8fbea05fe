"""DRF renderers: JSON over common.json (exact decimals, millisecond UTC timestamps), and
CSV for answers that are tables."""

from __future__ import annotations

import csv
import io
from typing import Any

from rest_framework.renderers import BaseRenderer, JSONRenderer

from common.json import dumps


class DecimalJSONRenderer(JSONRenderer):
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)


class CSVRenderer(BaseRenderer):
    """`Accept: text/csv`: a view whose `request.accepted_renderer` is this one hands
    over its answer as a table, `{"columns": [...], "rows": [[...], ...]}`."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(data["columns"])
        writer.writerows(data["rows"])
        return out.getvalue().encode()
