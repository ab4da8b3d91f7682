"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1); real volumes come from ../shared/data (skipped with a
reason when absent) and from the sample data built from packages."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
SHARED_DATA = Path(os.environ.get("SEER_SHARED_DATA", REPO.parent / "shared" / "data"))
CONTRACT = REPO.parent / "shared" / "SEER-MODEL-CONTRACT.md"
SAMPLE_DATA = REPO / "sample-data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ct-abdomen-pelvis" / "image.nii.gz").exists():
        pytest.skip(f"real volumes not available: {SHARED_DATA} is absent (see README, 'Test data')")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The package-built sample data (built once if missing, as `main.py sample-data` does)."""
    from seer import sample_data as builder

    if not builder.is_complete(SAMPLE_DATA):
        builder.build(SAMPLE_DATA, say=lambda m: None)
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def colin27(sample_data) -> Path:
    path = sample_data / "colin27_t1.nii.gz"
    if not path.exists():
        pytest.skip("Colin27 needs Debian's mricron-data package (sudo apt-get install mricron-data)")
    return path


def label_map(folder: Path) -> dict:
    return json.loads((folder / "labels.json").read_text())
