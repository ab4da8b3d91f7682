"""`PUT /datastore/label` of a final label with review on (`review true`: the save submits the annotator's read and
teaches nothing until approved) against review off (the default: the read is approved on save and the proposals
are queued for rewards), two real servers over identical datastores, measured in the same run, taking turns;
then the approval itself (`POST /seer/review/{image}`) on the review server.

Offline reasoner, atlas backbone (the pelvis CT as the atlas), a fresh copy of the abdomen CT slab per round with
two warm proposals on it; each PUT is sent with both servers' reward workers idle. Goal: the PUT with review at most
1.1x the PUT without. Run: python bench/bench_review.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests
from _util import Server, need_shared_data, save, table
from bench_save_label import PROMPTS, datastores, infer, put, wait_idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="final labels saved on each server (20)")
    args = parser.parse_args()
    shared = need_shared_data()
    label = shared / "ct-abdomen-small" / "labels.nii.gz"
    names = json.loads((shared / "ct-abdomen-small" / "labels.json").read_text())
    params = {"label_names": {name: int(value) for value, name in names.items()}, "client_id": "alice"}
    times: dict[str, list[float]] = {"review": [], "off": []}
    decide: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        atlases, folders = datastores(root, shared, tuple(times), args.rounds)
        confs = {"review": {"atlases": atlases, "review": "true"}, "off": {"atlases": atlases}}
        with Server(folders["review"], confs["review"], root / "review.log", timeout_s=180) as on, \
                Server(folders["off"], confs["off"], root / "off.log", timeout_s=180) as off:
            urls = {"review": on.url, "off": off.url}
            rewarded = 0
            for url in urls.values():  # warm: the registration (cached by content for every copy), a first save
                infer(url, "ct_00", "liver")
                put(url, "ct_00", label, params)
            rewarded += 1
            wait_idle(urls["off"], rewarded)
            for i in range(1, args.rounds + 1):
                study = f"ct_{i:02d}"
                for name in (("review", "off") if i % 2 == 0 else ("off", "review")):
                    url = urls[name]
                    for prompt in (PROMPTS[i % len(PROMPTS)], PROMPTS[(i + 3) % len(PROMPTS)]):
                        infer(url, study, prompt)
                    wait_idle(urls["off"], rewarded)
                    times[name].append(put(url, study, label, params))
                    if name == "off":
                        rewarded += 2
                wait_idle(urls["off"], rewarded)
                started = time.perf_counter()
                reply = requests.post(f"{urls['review']}/seer/review/{study}", timeout=60,
                                      json={"annotator": "anonymous/alice", "decision": "approve", "client_id": "rev"})
                decide.append(time.perf_counter() - started)
                if reply.status_code != 200:
                    raise SystemExit(f"approval failed: {reply.text[:300]}")
            info = requests.get(f"{urls['review']}/info/", timeout=10).json()["seer"]
    review, base = times["review"], times["off"]
    rows = [{"measure": "PUT final label", "saves": len(base), "median_ms_off": statistics.median(base) * 1000,
             "median_ms_review": statistics.median(review) * 1000,
             "ratio_median": statistics.median(review) / statistics.median(base),
             "ratio_mean": statistics.fmean(review) / statistics.fmean(base)}]
    print(table(rows, ["measure", "saves", "median_ms_off", "median_ms_review", "ratio_median", "ratio_mean"]))
    print(f"goal: at most 1.1x -> {'met' if rows[0]['ratio_median'] <= 1.1 else 'NOT met'}")
    print(f"approval (POST /seer/review): median {statistics.median(decide) * 1000:.0f} ms, p95 "
          f"{sorted(decide)[int(0.95 * (len(decide) - 1))] * 1000:.0f} ms over {len(decide)}; review server after the "
          f"run: {info['rewards']} rewards, {info['review']}")
    save("review", {"rows": rows, "approve_s": decide, "times": times, "info": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
