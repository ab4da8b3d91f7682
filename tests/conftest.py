"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1); real volumes come from ../shared/data (skipped with a
reason when absent) and from the sample data built from packages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pacs import free_port  # noqa: F401 - one free-port helper for the tests and the PACS
from postgres import PostgresServer, postgres_bin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
SHARED_DATA = Path(os.environ.get("SEER_SHARED_DATA", REPO.parent / "shared" / "data"))
CONTRACT = REPO.parent / "shared" / "SEER-MODEL-CONTRACT.md"
SAMPLE_DATA = REPO / "sample-data"


# Fixtures that start a server (MONAI Label, Orthanc, PostgreSQL): a test using one is a `server` test, which
# `make test-fast` leaves out, whether or not its module says so.
SERVER_FIXTURES = {"postgres_url", "fresh_postgres", "own_postgres", "pacs_server", "own_pacs", "server", "vlm_server", "ohif_server",
                   "realm"}


def pytest_collection_modifyitems(config, items):
    """Mark the tests that use a server fixture `server`, then order the modules so that those with server or slow
    tests come first (stable within a module): with parallel workers (`make test`), the long modules start early
    and the workers finish together."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
    weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        mine = 0 if item.get_closest_marker("server") else 1 if item.get_closest_marker("slow") else 2
        weight[module] = min(weight.get(module, 2), mine)
    first_seen = {module: n for n, module in reversed(list(enumerate(item.nodeid.split("::")[0] for item in items)))}
    items.sort(key=lambda item: (weight[item.nodeid.split("::")[0]], first_seen[item.nodeid.split("::")[0]]))


def missing_fixture(reason: str):
    """Skip with the reason; under CI (`CI` set) fail instead, so that no test is skipped silently there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing fixture is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ct-abdomen-pelvis" / "image.nii.gz").exists():
        missing_fixture(f"real volumes not available: {SHARED_DATA} is absent (see docs/development.md, 'Test data')")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The package-built sample data (built once if missing, as `main.py sample-data` does; parallel test workers
    wait for the one that builds it)."""
    from filelock import FileLock

    from seer import sample_data as builder

    SAMPLE_DATA.mkdir(exist_ok=True)
    with FileLock(str(SAMPLE_DATA / ".build.lock")):
        if not builder.is_complete(SAMPLE_DATA):
            builder.build(SAMPLE_DATA, say=lambda m: None)
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def colin27(sample_data) -> Path:
    path = sample_data / "colin27_t1.nii.gz"
    if not path.exists():
        missing_fixture("Colin27 needs Debian's mricron-data package (sudo apt-get install mricron-data)")
    return path


def label_map(folder: Path) -> dict:
    return json.loads((folder / "labels.json").read_text())


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    """A tiny real Qwen3-VL saved with save_pretrained (real Qwen vocabulary, random weights)."""
    from tiny_models import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_qwen, tmp_path_factory) -> Path:
    from tiny_models import build_lora_adapter

    return build_lora_adapter(tiny_qwen, tmp_path_factory.mktemp("tiny-seer-lora"))


@contextlib.contextmanager
def running_server(studies: Path | str, log: Path, conf: dict | None = None, timeout_s: float = 180,
                   env: dict | None = None, headers: dict | None = None):
    """`main.py serve` on a free port of 127.0.0.1 (extra environment `env`); yields its URL; stopped by PID
    (process group) afterwards. `headers` go with the readiness probe (a token when auth is on)."""
    import requests

    port = free_port()
    args = [sys.executable, str(REPO / "main.py"), "serve", "--studies", str(studies), "--port", str(port)]
    for key, value in (conf or {}).items():
        args += ["--conf", key, str(value)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MONAI_LABEL_DATASTORE_AUTO_RELOAD="true", **(env or {}))
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=2, headers=headers).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                pytest.fail(f"server did not answer within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_voxtell(tmp_path_factory) -> Path:
    """A VoxTell model folder (the smallest architecture VoxTell accepts, random weights, a small bank)."""
    from tiny_models import build_tiny_voxtell

    return build_tiny_voxtell(tmp_path_factory.mktemp("tiny-voxtell"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture(scope="session")
def ct_crop(tmp_path_factory, shared_data) -> Path:
    """A 48x48x60 crop of the pelvis CT (bladder, parts of both hips): small enough for VoxTell's sliding window
    on a CPU (2 patches of 48^3), with the matching label crop."""
    import nibabel as nib
    import numpy as np

    folder = tmp_path_factory.mktemp("ct-crop")
    for name in ("image", "labels"):
        image = nib.load(str(shared_data / "ct-abdomen-pelvis" / f"{name}.nii.gz"))
        data = np.asanyarray(image.dataobj)[40:88, 20:68, 0:60]
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [40, 20, 0] + image.affine[:3, 3]
        nib.save(nib.Nifti1Image(data, affine), str(folder / f"{name}.nii.gz"))
    return folder


def flipped_copy(path: Path, target: Path) -> Path:
    """The same volume stored in LPS order (first two axes reversed), affine adjusted: same anatomy."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), image.affine @ flip), str(target))
    return target


@pytest.fixture
def ct_slab_study(tmp_path, shared_data) -> dict:
    """A studies folder with one study (the upper-abdomen CT slab, `ct_small`), the TotalSegmentator CT as an atlas,
    and the slab's own label with its names: {"folder", "conf" (atlases, skill rounds of one, a 4 mm registration
    grid), "names", "label"}. The tests on this study check the label, review and state paths, not registration
    accuracy (tests/test_atlas_backbone.py and the atlas benchmarks do): the coarser grid makes its cold request
    cheaper."""
    import shutil

    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copy(shared_data / "ct-abdomen-small" / "image.nii.gz", folder / "ct_small.nii.gz")
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(shared_data / "ct-abdomen-pelvis")
    names = {name: int(value) for value, name in label_map(shared_data / "ct-abdomen-small").items()}
    return {"folder": folder, "conf": {"atlases": str(atlases), "skill_round": 1, "affine_spacing": 4.0,
                                       "demons_spacing": 4.0}, "names": names,
            "label": shared_data / "ct-abdomen-small" / "labels.nii.gz"}


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A PostgreSQL server started for this test session (PostgresServer), stopped afterwards.
    `SEER_TEST_POSTGRES` (a URL) uses a server that is already running instead."""
    if os.environ.get("SEER_TEST_POSTGRES"):
        yield os.environ["SEER_TEST_POSTGRES"]
        return
    if postgres_bin() is None:
        missing_fixture("PostgreSQL is not installed (sudo apt-get install postgresql)")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start().url
    finally:
        server.stop()


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL server of this test's own, which the test may stop and start again."""
    if postgres_bin() is None:
        missing_fixture("PostgreSQL is not installed (sudo apt-get install postgresql)")
    server = PostgresServer(tmp_path / "postgres")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def fresh_postgres(postgres_url):
    """A new, empty database on the session's PostgreSQL server; its URL."""
    import uuid

    import sqlalchemy

    name = "seer_" + uuid.uuid4().hex[:10]
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + "/" + name
