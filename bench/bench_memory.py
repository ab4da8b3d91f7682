"""Memory over a long run, in one run: the real server with bounded caches against the same server with bounds so
large that nothing is ever evicted (the baseline). Offline reasoner, atlas backbone (sample brain atlases + the
small abdominal CT as CT atlas), 2-core CPU.

Studies: the five of bench_team (CT pelvis, CT spleen, MR abdomen, MNI152, Colin27) and five more made from them
with other voxel values (new content, so nothing is shared with the originals), ten in all. REQUESTS requests pick
a study and a target at random (one seed, the same sequence in both modes), one at a time. After each reply the
server's resident memory (RSS, with children) is read. A request is "cold" when it is the first on its study and
"warm" otherwise; an evicted study or registration makes a warm request slower, which is the price of the bound.

Run: python bench/bench_memory.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from _util import Server, save, table
from bench_team import REQUESTS, studies_folder

N_REQUESTS = 200
WARM_UP = 40  # RSS is compared from this request on
BOUNDED = {"atlas_cache_mb": 256, "volume_cache_mb": 256}
UNBOUNDED = {"atlas_cache_mb": 100000, "volume_cache_mb": 100000}
DERIVED = {"ct_pelvis_b": ("ct_pelvis", 7.0), "ct_spleen_b": ("ct_spleen", 5.0), "mr_small_b": ("mr_small", 1.05),
           "mni152_b": ("mni152_t1", 1.03), "colin27_b": ("colin27_t1", 1.04)}


def add_derived(studies: Path) -> dict[str, list[str]]:
    """Copies with other voxel values (CT: + HU; MR: x factor); returns every study's requests."""
    requests_by_study = dict(REQUESTS)
    for name, (base, change) in DERIVED.items():
        image = nib.load(str(studies / f"{base}.nii.gz"))
        data = np.asanyarray(image.dataobj).astype(np.float32)
        data = data + change if base.startswith("ct") else data * change
        nib.save(nib.Nifti1Image(data, image.affine), str(studies / f"{name}.nii.gz"))
        requests_by_study[name] = REQUESTS[base]
    return requests_by_study


def run(root: Path, mode: str, conf: dict) -> dict:
    studies, atlases = studies_folder(root / mode)
    by_study = add_derived(studies)
    rng = np.random.default_rng(11)
    plan = [(s, str(rng.choice(by_study[s]))) for s in rng.choice(sorted(by_study), N_REQUESTS)]
    seen: set[str] = set()
    out = {"rss": [], "cold": [], "warm": [], "errors": 0, "refused": 0}
    with Server(studies, {"atlases": atlases, **conf}, root / f"{mode}.log") as server:
        out["rss_start"] = server.rss_mib()
        for study, prompt in plan:
            started = time.perf_counter()
            reply = requests.post(f"{server.url}/infer/seer", params={"image": study},
                                  data={"params": json.dumps({"prompt": prompt})}, timeout=900)
            seconds = time.perf_counter() - started
            if reply.status_code >= 500:
                out["errors"] += 1
            elif reply.status_code != 200:
                out["refused"] += 1
            out["warm" if study in seen else "cold"].append(seconds)
            seen.add(study)
            out["rss"].append(server.rss_mib())
        out["caches"] = requests.get(f"{server.url}/info/", timeout=30).json()["seer"]["caches"]
    return out


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, conf in (("bounded", BOUNDED), ("unbounded", UNBOUNDED)):
            print(f"{mode}: {N_REQUESTS} requests over 10 studies ...", flush=True)
            results[mode] = run(Path(tmp), mode, conf)
    rows = []
    for mode, r in results.items():
        rss = np.array(r["rss"])
        rows.append({
            "mode": mode,
            "atlas/volume cache MB": f"{(BOUNDED if mode == 'bounded' else UNBOUNDED)['atlas_cache_mb']}",
            "RSS start MB": f"{r['rss_start']:.0f}",
            f"RSS @{WARM_UP} MB": f"{rss[WARM_UP - 1]:.0f}",
            "RSS end MB": f"{rss[-1]:.0f}",
            "RSS max MB": f"{rss.max():.0f}",
            f"growth after {WARM_UP} MB": f"{rss[-1] - rss[WARM_UP - 1]:.0f}",
            "cold p50 s": f"{np.median(r['cold']):.2f}",
            "warm p50 s": f"{np.median(r['warm']):.2f}",
            "warm p95 s": f"{np.percentile(r['warm'], 95):.2f}",
            "errors": r["errors"],
        })
    print(table(rows, list(rows[0])))
    b, u = results["bounded"], results["unbounded"]
    print(f"RSS at the end: bounded {b['rss'][-1]:.0f} MB = {b['rss'][-1] / u['rss'][-1]:.2f}x unbounded "
          f"({u['rss'][-1]:.0f} MB); max {max(b['rss']) / max(u['rss']):.2f}x")
    print(f"warm p50: bounded {np.median(b['warm']) / np.median(u['warm']):.2f}x unbounded; "
          f"cold p50 {np.median(b['cold']) / np.median(u['cold']):.2f}x")
    print("bounded caches at the end:", json.dumps(b["caches"]))
    save("bench_memory", {"n_requests": N_REQUESTS, "warm_up": WARM_UP, "bounded": BOUNDED, "unbounded": UNBOUNDED,
                          "results": results, "table": rows})


if __name__ == "__main__":
    main()
