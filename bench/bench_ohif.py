"""The shipped OHIF viewer in Debian's Chromium (Playwright), over a real Orthanc, in one run. Offline reasoner,
atlas backbone (the small abdominal CT as the CT atlas), the 20-slice JPEG 2000 CT series:

1. REST baseline on a fresh server (empty cache): "liver" with OHIF's parameters, cold (first request on the
   study: download, conversion, registration) then "spleen" repeated 3 times (registration cached), median.
2. OHIF on a second fresh server: open the study (until the CT is drawn), type "liver" into the seer options,
   Run: seconds until the infer reply and until the overlay is drawn (cold); then "spleen" on the same page
   (repeated).
Prints OHIF/REST ratios: what the viewer adds to the server's time.

Run: python bench/bench_ohif.py   (needs orthanc, orthanc-dicomweb, chromium and playwright)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from _util import REPO, SHARED_DATA, Server, save, table

sys.path.insert(0, str(REPO / "tests"))
from ohif_driver import browser_page, chromium_available, open_study, run_prompt  # noqa: E402
from pacs import Orthanc, orthanc_binary  # noqa: E402

SERIES = SHARED_DATA / "dicom-ct-series"
OHIF = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False, "restore_label_idx": False}


def rest(url: str, image: str, prompt: str) -> float:
    started = time.perf_counter()
    reply = requests.post(f"{url}/infer/seer", params={"image": image, "output": "image"},
                          files={"params": (None, json.dumps({**OHIF, "prompt": prompt}))}, timeout=600)
    if reply.status_code != 200:
        raise SystemExit(f"infer failed: {reply.status_code} {reply.text[:300]}")
    return time.perf_counter() - started


def main() -> None:
    if orthanc_binary() is None or not chromium_available() or not SERIES.exists():
        raise SystemExit("needs orthanc + orthanc-dicomweb, chromium and ../shared/data/dicom-ct-series")
    import pydicom

    root = Path(tempfile.mkdtemp(prefix="bench-ohif-"))
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-small").symlink_to(SHARED_DATA / "ct-abdomen-small")
    files = sorted(SERIES.glob("*.dcm"))
    first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    pacs = Orthanc(root / "orthanc").start()
    try:
        pacs.upload(files)
        with Server(pacs.dicomweb, {"atlases": atlases}, root / "rest.log",
                    env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache-rest")}) as server:
            rest_cold = rest(server.url, series, "liver")
            rest_warm = statistics.median(rest(server.url, series, "spleen") for _ in range(3))
        print(f"REST: cold {rest_cold:.2f} s, repeated {rest_warm:.2f} s", flush=True)
        with Server(pacs.dicomweb, {"atlases": atlases}, root / "ohif.log",
                    env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache-ohif")}) as server, browser_page() as page:
            open_s = open_study(page, server.url, study)
            cold = run_prompt(page, server.url, "seer", "liver", segment="liver")
            warm = run_prompt(page, server.url, "seer", "spleen", segment="spleen")
    finally:
        pacs.stop()
    for name, run in (("cold", cold), ("repeated", warm)):
        if run.get("status") != 200 or not run.get("segments"):
            raise SystemExit(f"OHIF {name} run failed: {run}")
    rows = [
        {"measure": "open study until the CT is drawn", "OHIF s": f"{open_s:.2f}", "REST s": "", "OHIF/REST": ""},
        {"measure": "Run -> infer reply, cold ('liver')", "OHIF s": f"{cold['reply_s']:.2f}",
         "REST s": f"{rest_cold:.2f}", "OHIF/REST": f"{cold['reply_s'] / rest_cold:.2f}x"},
        {"measure": "Run -> overlay drawn, cold", "OHIF s": f"{cold['overlay_s']:.2f}", "REST s": f"{rest_cold:.2f}",
         "OHIF/REST": f"{cold['overlay_s'] / rest_cold:.2f}x"},
        {"measure": "Run -> overlay drawn, repeated ('spleen')", "OHIF s": f"{warm['overlay_s']:.2f}",
         "REST s": f"{rest_warm:.2f}", "OHIF/REST": f"{warm['overlay_s'] / rest_warm:.2f}x"},
    ]
    print(table(rows, list(rows[0])))
    save("bench_ohif", {"open_s": open_s, "cold": cold, "repeated": warm, "rest_cold_s": rest_cold,
                        "rest_repeated_s": rest_warm})


if __name__ == "__main__":
    main()
