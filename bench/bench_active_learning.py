"""Active learning at scale, in one run:

1. Next-sample latency through the real server on a datastore of 10,000 tiny studies (4x4x4 voxels): strategy
   `seer` (SQLite state, every call leases a new study) against MONAI Label's stock `random` (same server, same
   datastore, calls interleaved), median and p95 of the HTTP round trip. Goal: seer under 30 ms and at least 9x
   faster than random.
2. 20 concurrent clients asking `seer` 10 times each: no study handed twice, p95.
3. Server memory (RSS, MiB) with the 10,000 studies after the calls, against a server over 10 tiny studies.
4. Scoring throughput (studies/s) of the `seer` scoring method with the offline reasoner on real CT crops (the
   pelvis CT cut at 8 different ranges, with the whole pelvis CT as the one atlas): reasoning parts only
   (`al_backbone false`) and with the atlas backbone (registration per study, cold).

Run: python bench/bench_active_learning.py
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from _util import Server, need_shared_data, save, table

STUDIES = 10_000
SEER_CALLS = 300
RANDOM_CALLS = 40
CLIENTS, CALLS_EACH = 20, 10


def tiny_studies(folder: Path, count: int) -> None:
    import nibabel as nib

    folder.mkdir(parents=True)
    data = np.zeros((4, 4, 4), np.int16)
    for i in range(count):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"s{i:05d}.nii.gz"))


def ask(url: str, strategy: str, client: str) -> tuple[float, dict]:
    started = time.perf_counter()
    reply = requests.post(f"{url}/activelearning/{strategy}", json={"client_id": client}, timeout=60)
    seconds = time.perf_counter() - started
    if reply.status_code != 200:
        raise SystemExit(f"{strategy}: {reply.status_code} {reply.text[:300]}")
    return seconds, reply.json()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def next_sample_latency(root: Path) -> dict:
    studies = root / "tiny"
    tiny_studies(studies, STUDIES)
    with Server(studies, {"lease_s": 3600}, root / "tiny.log") as server:
        for _ in range(3):  # warm-up: first calls import and connect
            ask(server.url, "seer", "warm")
            ask(server.url, "random", "warm")
        seer, stock = [], []
        for n in range(SEER_CALLS):  # interleaved: each random call between seer calls
            seer.append(ask(server.url, "seer", f"a{n}")[0])
            if n % (SEER_CALLS // RANDOM_CALLS) == 0 and len(stock) < RANDOM_CALLS:
                stock.append(ask(server.url, "random", f"r{n}")[0])
        concurrent: list[float] = []
        handed: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS)

        def client(c: int):
            barrier.wait()
            for _ in range(CALLS_EACH):
                seconds, reply = ask(server.url, "seer", f"c{c}")
                with lock:
                    concurrent.append(seconds)
                    handed.append(reply.get("id"))

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rss = server.rss_mib()
    small = root / "ten"
    tiny_studies(small, 10)
    with Server(small, {"lease_s": 3600}, root / "ten.log") as server:
        ask(server.url, "seer", "warm")
        rss_small = server.rss_mib()
    return {
        "studies": STUDIES,
        "seer_median_ms": pct(seer, 50), "seer_p95_ms": pct(seer, 95), "seer_calls": len(seer),
        "random_median_ms": pct(stock, 50), "random_p95_ms": pct(stock, 95), "random_calls": len(stock),
        "speedup_median": statistics.median(stock) / statistics.median(seer),
        "concurrent_clients": CLIENTS, "concurrent_calls": len(concurrent),
        "concurrent_p95_ms": pct(concurrent, 95), "concurrent_median_ms": pct(concurrent, 50),
        "concurrent_calls_per_s": len(concurrent) / wall,
        "handed_twice": len(handed) - len(set(handed)), "server_rss_mib": rss, "server_rss_mib_10_studies": rss_small,
    }


def scoring_throughput(root: Path) -> list[dict]:
    import nibabel as nib

    data = need_shared_data()
    studies = root / "crops"
    studies.mkdir()
    image = nib.load(str(data / "ct-abdomen-pelvis" / "image.nii.gz"))
    array = np.asanyarray(image.dataobj)
    for n, (z0, z1) in enumerate([(0, 56), (0, 64), (4, 70), (8, 76), (0, 90), (30, 112), (60, 112), (70, 112)]):
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [0, 0, z0] + image.affine[:3, 3]
        nib.save(nib.Nifti1Image(array[:, :, z0:z1], affine), str(studies / f"crop{n}.nii.gz"))
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "pelvis").symlink_to(data / "ct-abdomen-pelvis")
    rows = []
    for backbone in (False, True):
        conf = {"atlases": atlases, "campaign": "left hip bone; right hip bone; sacrum",
                "al_backbone": str(backbone).lower(), "reasoner": "offline"}
        state = root / "crops" / ".seer"
        if state.exists():
            import shutil

            shutil.rmtree(state)  # each mode starts cold (no cached registrations, no scores)
        with Server(studies, conf, root / f"score-{backbone}.log") as server:
            # the start-up pass scores every study in the background; its summary is `last_run`
            deadline = time.time() + 3600
            while time.time() < deadline:
                info = requests.get(f"{server.url}/info/", timeout=30).json()["seer"]["active_learning"]
                if info["last_run"] and info["scoring"]["state"] == "idle":
                    break
                time.sleep(1)
            last = info["last_run"]
        rows.append({"mode": "reasoning + atlas backbone" if backbone else "reasoning only",
                     "studies": last["scored"] + last["unchanged"], "scored": last["scored"],
                     "seconds": last["seconds"], "studies_per_s": last["scored"] / max(last["seconds"], 1e-9),
                     "out_of_view": info["out_of_view"]})
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        latency = next_sample_latency(root)
        print(table([{"strategy": "seer", "median_ms": latency["seer_median_ms"], "p95_ms": latency["seer_p95_ms"],
                      "calls": latency["seer_calls"]},
                     {"strategy": "random (stock)", "median_ms": latency["random_median_ms"],
                      "p95_ms": latency["random_p95_ms"], "calls": latency["random_calls"]}],
                    ["strategy", "median_ms", "p95_ms", "calls"]))
        print(f"seer is {latency['speedup_median']:.1f}x faster than stock random at {STUDIES} studies "
              f"(goal: under 30 ms and at least 9x)")
        print(f"{CLIENTS} concurrent clients x {CALLS_EACH}: p95 {latency['concurrent_p95_ms']:.1f} ms, "
              f"{latency['concurrent_calls_per_s']:.0f} calls/s, handed twice: {latency['handed_twice']}")
        print(f"server RSS with {STUDIES} studies: {latency['server_rss_mib']:.0f} MiB, with 10 studies "
              f"{latency['server_rss_mib_10_studies']:.0f} MiB "
              f"({latency['server_rss_mib'] / latency['server_rss_mib_10_studies']:.2f}x)")
        scoring = scoring_throughput(root)
        print(table(scoring, ["mode", "studies", "scored", "seconds", "studies_per_s", "out_of_view"]))
    save("active_learning", {"next_sample": latency, "scoring": scoring})


if __name__ == "__main__":
    main()
