"""A processor for the killed-worker test, loaded into real Celery workers (--include).

TALLY_E2E_MODE=hang: note the claimed ids, then hang until killed.
TALLY_E2E_MODE=record: append each processed record id to a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from collection.processing import register_resolver

WORK_DIR = Path(os.environ.get("TALLY_E2E_DIR", "."))
MODE = os.environ.get("TALLY_E2E_MODE", "record")


class E2EProcessor:
    def process(self, records) -> dict[int, str]:
        ids = [record.record_id for record in records]
        if MODE == "hang":
            (WORK_DIR / "claimed.txt").write_text("\n".join(ids))
            time.sleep(600)
        with (WORK_DIR / "processed.txt").open("a") as file:
            file.write("".join(f"{record_id}\n" for record_id in ids))
        return {}


register_resolver(lambda collector: E2EProcessor())
