"""Helpers shared by the benchmark scripts (paths, timing, tables)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(os.environ.get("SEER_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DATA = REPO / "sample-data"
RESULTS = REPO / "bench" / "results"


def need_shared_data() -> Path:
    if not (SHARED_DATA / "ct-abdomen-pelvis").exists():
        raise SystemExit(f"benchmark needs the real volumes in {SHARED_DATA}")
    return SHARED_DATA


def need_sample_data() -> Path:
    from seer import sample_data

    if not sample_data.is_complete(SAMPLE_DATA):
        sample_data.build(SAMPLE_DATA)
    return SAMPLE_DATA


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(rows: list[dict], columns: list[str]) -> str:
    from seer.files import text_table

    return text_table(rows, columns)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
