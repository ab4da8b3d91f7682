"""DICOMweb (Orthanc) against local NIfTI, in one run, offline reasoner + atlas backbone (the small abdominal CT as
the one CT atlas, plus the sample brain atlases):

1. Time to first mask for the 20-slice JPEG 2000 CT series of ../shared/data/dicom-ct-series, requested as
   "liver" with OHIF's parameters (raw uint8 NRRD): through a real Orthanc (DICOMweb plugin, series fetched as
   stored) against the same series converted to NIfTI in a local studies folder. Cold = the first request on the
   study on a fresh server with an empty cache (DICOMweb: QIDO check + WADO-RS download + DICOM->NIfTI +
   registration; local: load + registration), 3 fresh servers each; repeated = 5 more requests on the same study
   (registration cached), median.
2. Result writing on the series grid (512x512x20): raw uint8 NRRD (OHIF) and uncompressed NIfTI against the
   default gzip NIfTI, and a DICOM SEG (highdicom) over the series; median of 5.
3. Server memory (RSS, MiB) after the requests, DICOMweb against local.

Run: python bench/bench_dicomweb.py   (needs Debian's orthanc and orthanc-dicomweb)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from _util import REPO, SHARED_DATA, Server, save, table

sys.path.insert(0, str(REPO / "tests"))
from pacs import Orthanc, orthanc_binary  # noqa: E402

SERIES = SHARED_DATA / "dicom-ct-series"
OHIF = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False, "restore_label_idx": False,
        "prompt": "liver"}
COLD_RUNS, WARM_RUNS = 3, 5


def infer(url: str, image: str) -> float:
    started = time.perf_counter()
    reply = requests.post(f"{url}/infer/seer", params={"image": image, "output": "image"},
                          files={"params": (None, json.dumps(OHIF))}, timeout=600)
    seconds = time.perf_counter() - started
    if reply.status_code != 200 or not reply.content.startswith(b"NRRD"):
        raise SystemExit(f"infer failed: {reply.status_code} {reply.text[:300]}")
    return seconds


def series_as_nifti(folder: Path) -> Path:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(reader.Execute(), str(folder / "ct_series.nii.gz"))
    return folder / "ct_series.nii.gz"


def time_to_mask(root: Path, pacs: Orthanc, uid: str, atlases: Path) -> dict:
    out: dict = {"local": {"cold": [], "warm": [], "rss": []}, "dicomweb": {"cold": [], "warm": [], "rss": []}}
    for run in range(COLD_RUNS):
        studies = root / f"local-{run}"
        series_as_nifti(studies)
        for kind, where, env, image in (
            ("local", studies, {}, "ct_series"),
            ("dicomweb", pacs.dicomweb, {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / f"cache-{run}")}, uid),
        ):
            with Server(where, {"atlases": atlases}, root / f"{kind}-{run}.log", env=env) as server:
                out[kind]["cold"].append(infer(server.url, image))
                if run == 0:
                    out[kind]["warm"] = [infer(server.url, image) for _ in range(WARM_RUNS)]
                    out[kind]["rss"].append(server.rss_mib())
            print(f"  {kind} run {run}: cold {out[kind]['cold'][-1]:.2f} s", flush=True)
    return out


def writing(root: Path) -> dict:
    from seer.imaging.volume import ResultFormat, load_volume, write_mask
    from seer.pacs.dicom_seg import write_seg

    image = series_as_nifti(root / "grid")
    volume = load_volume(image)
    mask = np.zeros(volume.array.shape, bool)
    mask[150:350, 150:300, 3:15] = True
    formats = {
        "nii.gz (default)": lambda p: write_mask(mask, volume, p, value=162),
        "nrrd raw uint8 (OHIF)": lambda p: ResultFormat.from_params(
            {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}).write(
            mask, volume, p, 162),
        "nii uncompressed": lambda p: ResultFormat.from_params({"result_extension": ".nii"}).write(
            mask, volume, p, 162),
    }
    times: dict[str, float] = {}
    for name, write in formats.items():
        runs = []
        for i in range(5):
            path = root / f"out-{i}{'.nrrd' if 'nrrd' in name else '.nii' if 'uncompressed' in name else '.nii.gz'}"
            started = time.perf_counter()
            write(path)
            runs.append(time.perf_counter() - started)
        times[name] = statistics.median(runs)
    label = root / "label.nii.gz"
    write_mask(mask, volume, label, value=162)
    runs = []
    for i in range(5):
        started = time.perf_counter()
        write_seg(label, SERIES, root / f"seg-{i}.dcm", {162: "liver"})
        runs.append(time.perf_counter() - started)
    times["DICOM SEG (highdicom)"] = statistics.median(runs)
    return times


def main() -> None:
    if orthanc_binary() is None or not SERIES.exists():
        raise SystemExit("needs Debian's orthanc + orthanc-dicomweb and ../shared/data/dicom-ct-series")
    root = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-small").symlink_to(SHARED_DATA / "ct-abdomen-small")
    pacs = Orthanc(root / "orthanc").start()
    try:
        pacs.upload(sorted(SERIES.glob("*.dcm")))
        uid = pacs.series_uids("CT")[0]
        print("time to first mask (offline reasoner, atlas backbone, 'liver', OHIF's NRRD):", flush=True)
        timing = time_to_mask(root, pacs, uid, atlases)
    finally:
        pacs.stop()
    rows = []
    for kind in ("local", "dicomweb"):
        t = timing[kind]
        rows.append({"studies": kind, "cold median s": f"{statistics.median(t['cold']):.2f}",
                     "cold runs s": " ".join(f"{v:.2f}" for v in t["cold"]),
                     "repeated median s": f"{statistics.median(t['warm']):.2f}", "RSS MiB": f"{t['rss'][0]:.0f}"})
    ratio_cold = statistics.median(timing["dicomweb"]["cold"]) / statistics.median(timing["local"]["cold"])
    ratio_warm = statistics.median(timing["dicomweb"]["warm"]) / statistics.median(timing["local"]["warm"])
    print(table(rows, list(rows[0])))
    print(f"DICOMweb / local: cold {ratio_cold:.2f}x, repeated {ratio_warm:.2f}x, RSS "
          f"{timing['dicomweb']['rss'][0] / timing['local']['rss'][0]:.2f}x")
    times = writing(root)
    base = times["nii.gz (default)"]
    wrows = [{"format": k, "median ms": f"{v * 1000:.1f}", "vs nii.gz": f"{v / base:.2f}x"} for k, v in times.items()]
    print("result writing, 512x512x20 series grid:")
    print(table(wrows, list(wrows[0])))
    save("bench_dicomweb", {"timing": timing, "ratio_cold": ratio_cold, "ratio_warm": ratio_warm, "writing": times})


if __name__ == "__main__":
    main()
