"""A team on one server, in one run: off-loop serving (`infer_concurrency 2`, the default) against MONAI Label's
inline serving (`infer_concurrency 0`). Offline reasoner, atlas backbone (sample brain atlases + the small abdominal
CT as CT atlas), 2-core CPU.

1. Load test, DURATION_S per mode on a fresh server: 8 simulated annotators loop next-sample (strategy seer) ->
   infer (a request that fits the study) -> save the mask (tag `draft`, so the pool never empties); a monitor
   polls /info and next-sample every 0.5 s. p50/p95 of /info, next-sample (monitor) and infer (annotators), the
   number of inferences, errors, and what was lost (trace rows and saved labels against successful calls).
2. Cold throughput: the first request on each of 4 studies sent at once, fresh server per mode: wall time until
   all four are back.

Run: python bench/bench_team.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from _util import SHARED_DATA, Server, need_sample_data, need_shared_data, save, table

DURATION_S = 120
ANNOTATORS = 8
REQUESTS = {"ct_pelvis": ["liver", "left kidney", "spleen", "urinary bladder"],
            "ct_spleen": ["spleen"], "mr_small": ["liver", "right kidney"],
            "mni152_t1": ["left hippocampus", "brain"], "colin27_t1": ["right amygdala", "brain"]}


def studies_folder(root: Path) -> tuple[Path, Path]:
    shared, sample = need_shared_data(), need_sample_data()
    studies = root / "studies"
    studies.mkdir(parents=True)
    shutil.copy(shared / "ct-abdomen-pelvis" / "image.nii.gz", studies / "ct_pelvis.nii.gz")
    shutil.copy(shared / "ct-spleen" / "image.nii.gz", studies / "ct_spleen.nii.gz")
    shutil.copy(shared / "mr-abdomen-small" / "image.nii.gz", studies / "mr_small.nii.gz")
    shutil.copy(sample / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    shutil.copy(sample / "colin27_t1.nii.gz", studies / "colin27_t1.nii.gz")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-small").symlink_to(SHARED_DATA / "ct-abdomen-small")
    return studies, atlases


def timed(call, *args, **kwargs) -> tuple[float, requests.Response | None]:
    started = time.perf_counter()
    try:
        reply = call(*args, **kwargs)
    except requests.RequestException:
        reply = None
    return time.perf_counter() - started, reply


def load_test(root: Path, mode: str, concurrency: int) -> dict:
    studies, atlases = studies_folder(root / mode)
    stats: dict = {"info": [], "next": [], "infer": [], "errors": [], "infers_ok": 0, "refused": 0, "saves": 0}
    lock = threading.Lock()
    stop = time.time() + DURATION_S
    with Server(studies, {"atlases": atlases, "infer_concurrency": concurrency}, root / f"{mode}.log") as server:
        url = server.url

        def annotator(n: int) -> None:
            rng = np.random.default_rng(n)
            while time.time() < stop:
                _, reply = timed(requests.post, f"{url}/activelearning/seer", json={"client_id": f"a{n}"}, timeout=600)
                study = (reply.json().get("id") if reply is not None and reply.status_code == 200 else None)
                study = study or str(rng.choice(list(REQUESTS)))
                prompt = str(rng.choice(REQUESTS[study]))
                seconds, reply = timed(requests.post, f"{url}/infer/seer", params={"image": study},
                                       data={"params": json.dumps({"prompt": prompt})}, timeout=900)
                with lock:
                    if reply is None or reply.status_code >= 500:
                        stats["errors"].append(f"infer {study} {prompt}: {reply.status_code if reply else 'no reply'}")
                        continue
                    if reply.status_code != 200:
                        stats["refused"] += 1
                        continue
                    stats["infer"].append(seconds)
                    stats["infers_ok"] += 1
                mask = reply.content
                _, saved = timed(requests.put, f"{url}/datastore/label", params={"image": study, "tag": "draft"},
                                 files={"label": ("label.nii.gz", mask)}, timeout=600)
                with lock:
                    if saved is not None and saved.status_code == 200:
                        stats["saves"] += 1
                    else:
                        stats["errors"].append(f"save {study}: {saved.status_code if saved else 'no reply'}")
                requests.post(f"{url}/activelearning/seer/release", params={"image": study, "client_id": f"a{n}"},
                              timeout=60)

        def monitor() -> None:
            while time.time() < stop:
                seconds, reply = timed(requests.get, f"{url}/info/", timeout=600)
                with lock:
                    (stats["info"] if reply is not None and reply.status_code == 200 else stats["errors"]).append(
                        seconds if reply is not None and reply.status_code == 200 else "info failed")
                seconds, reply = timed(requests.post, f"{url}/activelearning/seer", json={"client_id": "monitor"},
                                       timeout=600)
                with lock:
                    if reply is not None and reply.status_code == 200:
                        stats["next"].append(seconds)
                        if reply.json().get("id"):
                            requests.post(f"{url}/activelearning/seer/release",
                                          params={"image": reply.json()["id"], "client_id": "monitor"}, timeout=60)
                    else:
                        stats["errors"].append("next-sample failed")
                time.sleep(0.5)

        threads = [threading.Thread(target=annotator, args=(n,)) for n in range(ANNOTATORS)]
        threads.append(threading.Thread(target=monitor))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats["rss_mib"] = server.rss_mib()
    rows = [json.loads(x) for x in (studies / ".seer" / "traces.jsonl").read_text().splitlines() if x.strip()]
    traced = [r for r in rows if r.get("type", "trace") == "trace"]
    stats["traced"] = len(traced)
    stats["traced_ok"] = sum(1 for r in traced if not r.get("refused"))
    stats["drafts_on_disk"] = len(list((studies / "labels" / "draft").glob("*"))) if (
        studies / "labels" / "draft").exists() else 0
    return stats


def cold_throughput(root: Path, mode: str, concurrency: int) -> float:
    studies, atlases = studies_folder(root / f"cold-{mode}")
    picks = [("ct_pelvis", "liver"), ("mr_small", "liver"), ("mni152_t1", "left hippocampus"),
             ("colin27_t1", "right amygdala")]
    with Server(studies, {"atlases": atlases, "infer_concurrency": concurrency}, root / f"cold-{mode}.log") as server:
        started = time.perf_counter()
        threads = [threading.Thread(target=requests.post, args=(f"{server.url}/infer/seer",),
                                    kwargs={"params": {"image": s, "output": "json"},
                                            "data": {"params": json.dumps({"prompt": p})}, "timeout": 900})
                   for s, p in picks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started


def pct(values, q) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "-"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-team-"))
    results = {}
    for mode, concurrency in (("off-loop", 2), ("inline", 0)):
        print(f"load test, {mode} (infer_concurrency {concurrency}), {DURATION_S} s ...", flush=True)
        results[mode] = load_test(root, mode, concurrency)
    rows = []
    for mode, s in results.items():
        rows.append({"serving": mode, "/info p50 ms": pct(s["info"], 50), "/info p95 ms": pct(s["info"], 95),
                     "next p50 ms": pct(s["next"], 50), "next p95 ms": pct(s["next"], 95),
                     "infer p50 ms": pct(s["infer"], 50), "infer p95 ms": pct(s["infer"], 95),
                     "infers": s["infers_ok"], "refused": s["refused"], "errors": len(s["errors"]),
                     "traced ok": s["traced_ok"], "saves": s["saves"], "RSS MiB": f"{s['rss_mib']:.0f}"})
    print(table(rows, list(rows[0])))
    on, off = results["off-loop"], results["inline"]
    print(f"/info p95: {np.percentile(on['info'], 95) / np.percentile(off['info'], 95):.3f}x inline; "
          f"next-sample p95: {np.percentile(on['next'], 95) / np.percentile(off['next'], 95):.3f}x inline; "
          f"inferences done: {on['infers_ok'] / max(1, off['infers_ok']):.2f}x inline")
    for mode, s in results.items():
        lost = s["infers_ok"] - s["traced_ok"]
        print(f"{mode}: {s['infers_ok']} inferences answered, {s['traced_ok']} in the trace log (lost {lost}); "
              f"{s['saves']} saves answered; errors: {s['errors'][:5]}")
    cold = {mode: cold_throughput(root, mode, c) for mode, c in (("off-loop", 2), ("inline", 0))}
    print(f"cold, 4 studies at once: off-loop {cold['off-loop']:.1f} s, inline {cold['inline']:.1f} s "
          f"({cold['inline'] / cold['off-loop']:.2f}x throughput)")
    save("bench_team", {"load": {m: {k: v for k, v in s.items()} for m, s in results.items()}, "cold": cold,
                        "duration_s": DURATION_S, "annotators": ANNOTATORS})


if __name__ == "__main__":
    main()
