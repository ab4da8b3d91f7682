"""The OHIF viewer that monailabel ships, in a real browser (Debian's Chromium through Playwright), over a real
Orthanc: both encodings of the CT series display, and a free-text request typed into the `seer` options draws a
segment named after the target. Screenshots and timings are kept in test-artifacts/ (git ignores it)."""

from __future__ import annotations

import json

import pytest
from ohif_driver import browser_page, canvas_rgb, chromium_available, coloured, open_study, run_prompt
from pacs import Orthanc
from test_dicomweb import OFFLINE, _ct_atlas, _series_files

from conftest import REPO, missing_fixture, running_server

pytestmark = pytest.mark.server
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def ohif_server(tmp_path):
    files = _series_files()
    if not chromium_available():
        missing_fixture("Chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing_fixture("playwright is not installed (requirements-dev.txt)")
    pacs = Orthanc(tmp_path / "orthanc").start()
    try:
        pacs.upload(files)
        raw_study, _ = pacs.upload_uncompressed(files)
        import pydicom

        j2k_study = str(pydicom.dcmread(str(files[0]), stop_before_pixels=True).StudyInstanceUID)
        env = {**OFFLINE, "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}
        conf = {"atlases": _ct_atlas(tmp_path / "atlases")}
        with running_server(pacs.dicomweb, tmp_path / "server.log", conf, env=env) as url:
            yield url, j2k_study, raw_study
    finally:
        pacs.stop()


def test_ohif_shows_both_encodings_and_draws_the_requested_segment(ohif_server):
    url, j2k_study, raw_study = ohif_server
    ARTIFACTS.mkdir(exist_ok=True)
    timings = {}
    with browser_page() as page:
        timings["open_uncompressed_s"] = open_study(page, url, raw_study)
        page.screenshot(path=str(ARTIFACTS / "ohif-uncompressed.png"))
    with browser_page() as page:
        timings["open_jpeg2000_s"] = open_study(page, url, j2k_study)
        result = run_prompt(page, url, "seer", "the liver pls", segment="liver")
        page.screenshot(path=str(ARTIFACTS / "ohif-liver.png"))
        page.locator('[data-viewport-uid="mpr-axial"]').screenshot(path=str(ARTIFACTS / "ohif-liver-axial.png"))
        after = canvas_rgb(page)
    timings.update({k: result.get(k) for k in ("reply_s", "overlay_s")})
    (ARTIFACTS / "ohif-timings.json").write_text(json.dumps(timings, indent=1))
    assert result["status"] == 200, result
    assert result["coloured_before"] < 50  # the CT alone is grey
    assert result["changed_coloured"] > 200 and coloured(after).sum() > 200
    liver = [s for s in result["segments"] if s["label"] == "liver"]
    assert liver and liver[0]["voxels"] > 10_000, result["segments"]
