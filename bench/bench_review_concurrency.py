"""The review paths under many clients at once, against one client of each kind, in the same run.

Six copies of the abdomen CT slab, `review true`, `reads_per_study 2`, the pelvis CT as the atlas (offline reasoner,
atlas backbone). Annotators ask for the next study, sometimes run a request on it, and save a final read (one of
four versions of the slab's label, the liver moved 0-3 voxels; a study nobody hands them is saved anyway, without a
lease). Reviewers read the queue and a study's reads, then approve or reject one through `POST /seer/review` or
flag / approve the held one through the Slicer Reviewer's `updatelabelinfo`. Phase 1: one annotator and one
reviewer (the baseline); phase 2: six annotators and three reviewers; each for `--seconds`, on fresh studies.

Printed per phase: requests answered per second, the save's median and p95 latency, every status code, and the
checks made once the clients stop: no 5xx, no traceback in the logs, no label written under the servers' working
directory, and for every study the label on disk is the
file of the read recorded as holding it, the study teaches exactly when that read is approved, and it is an atlas
exactly when it teaches. `--state-db postgresql` runs two servers on one PostgreSQL over one studies folder.

Run: python bench/bench_review_concurrency.py [--seconds 60] [--state-db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from _util import REPO, Server, need_shared_data, save, table

STUDIES = 6


def make_folder(root: Path, shared: Path) -> tuple[Path, list[Path], dict[str, int]]:
    import nibabel as nib
    import numpy as np

    studies = root / "studies"
    studies.mkdir(parents=True)
    for i in range(STUDIES):
        shutil.copy(shared / "ct-abdomen-small" / "image.nii.gz", studies / f"ct_{i}.nii.gz")
    names = {name: int(v) for v, name in json.loads((shared / "ct-abdomen-small" / "labels.json").read_text()).items()}
    image = nib.load(str(shared / "ct-abdomen-small" / "labels.nii.gz"))
    data = np.asarray(image.dataobj)
    versions = []
    for shift in range(4):
        moved = data.copy()
        liver = moved == names["liver"]
        moved[liver] = 0
        moved[np.roll(liver, shift, axis=0) & (moved == 0)] = names["liver"]
        path = root / f"read{shift}.nii.gz"
        nib.save(nib.Nifti1Image(moved.astype(np.uint8), image.affine), str(path))
        versions.append(path)
    return studies, versions, names


class Clients:
    def __init__(self, urls: list[str], versions: list[Path], names: dict[str, int], seconds: float):
        self.urls, self.versions, self.names = urls, versions, names
        self.stop = time.time() + seconds
        self.codes: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.saves: list[float] = []
        self.lock = threading.Lock()

    def record(self, what: str, reply: requests.Response, started: float | None = None) -> None:
        with self.lock:
            self.codes[f"{what} {reply.status_code}"] += 1
            if reply.status_code >= 500:
                self.failures.append(f"{what} {reply.status_code}: {reply.text[:200]}")
            if started is not None and reply.status_code == 200:
                self.saves.append(time.perf_counter() - started)

    def annotator(self, k: int) -> None:
        rng, client = random.Random(k), f"ann{k}"
        while time.time() < self.stop:
            url = rng.choice(self.urls)
            try:
                reply = requests.post(f"{url}/activelearning/seer", json={"client_id": client}, timeout=120)
                self.record("next", reply)
                study = (reply.json().get("id") if reply.status_code == 200 else None) or f"ct_{rng.randrange(STUDIES)}"
                if rng.random() < 0.3:
                    self.record("infer", requests.post(
                        f"{url}/infer/seer", params={"image": study, "output": "json"},
                        data={"params": json.dumps({"prompt": rng.choice(["liver", "spleen", "left kidney"])})},
                        timeout=300))
                path = rng.choice(self.versions)
                started = time.perf_counter()
                with open(path, "rb") as fp:
                    reply = requests.put(f"{url}/datastore/label", params={"image": study, "tag": "final"},
                                         data={"params": json.dumps({"label_names": self.names, "client_id": client})},
                                         files={"label": (path.name, fp)}, timeout=120)
                self.record("save", reply, started)
            except requests.RequestException as exc:
                with self.lock:
                    self.failures.append(f"annotator {client}: {exc}")

    def reviewer(self, k: int) -> None:
        rng = random.Random(100 + k)
        while time.time() < self.stop:
            url = rng.choice(self.urls)
            try:
                self.record("queue", requests.get(f"{url}/seer/review/queue", timeout=60))
                study = f"ct_{rng.randrange(STUDIES)}"
                shown = requests.get(f"{url}/seer/review/{study}", timeout=60)
                self.record("show", shown)
                reads = shown.json().get("reads", []) if shown.status_code == 200 else []
                if not reads:
                    time.sleep(0.2)
                    continue
                read, decision = rng.choice(reads), rng.choice(["approve", "approve", "reject"])
                if rng.random() < 0.3:
                    meta = {"segmentationMeta": {"status": "approved" if decision == "approve" else "flagged",
                                                 "approvedBy": f"rev{k}", "comment": "checked"}}
                    self.record("slicer", requests.put(
                        f"{url}/datastore/updatelabelinfo", params={"label": study, "tag": "final"},
                        data={"params": json.dumps(meta)}, timeout=120))
                else:
                    self.record("decide", requests.post(f"{url}/seer/review/{study}", timeout=120, json={
                        "annotator": read["annotator"], "decision": decision, "comment": "checked",
                        "client_id": f"rev{k}"}))
                time.sleep(rng.random() * 0.3)
            except requests.RequestException as exc:
                with self.lock:
                    self.failures.append(f"reviewer rev{k}: {exc}")

    def run(self, annotators: int, reviewers: int) -> float:
        threads = [threading.Thread(target=self.annotator, args=(k,)) for k in range(annotators)]
        threads += [threading.Thread(target=self.reviewer, args=(k,)) for k in range(reviewers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started


def check(url: str, studies: Path, state_db: str | None) -> list[str]:
    """The invariants once the clients stopped (see the module docstring)."""
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(REPO / "lib"))
    from seer.review.label_reads import LabelReads

    problems = []
    # a request makes the server notice decisions taken on the other server (its atlases follow them)
    requests.post(f"{url}/infer/seer", params={"image": "ct_0", "output": "json"},
                  data={"params": json.dumps({"prompt": "liver"})}, timeout=300)
    info = requests.get(f"{url}/info/", timeout=30).json()["seer"]
    reads = LabelReads.for_datastore(state_db, studies / ".seer")
    try:
        for i in range(STUDIES):
            study = f"ct_{i}"
            shown = requests.get(f"{url}/seer/review/{study}", timeout=30).json()
            held = shown["label_holds"]
            if held is None:
                continue
            states = {r["annotator"]: r["state"] for r in shown["reads"]}
            if shown["teaches"] != (states.get(held) == "approved"):
                problems.append(f"{study}: teaches {shown['teaches']} but the held read is {states.get(held)}")
            if shown["teaches"] == (study in info["labels_not_atlases"]):
                problems.append(f"{study}: teaches {shown['teaches']}, atlas {study not in info['labels_not_atlases']}")
            disk = studies.parent / f"{study}-on-disk.nii.gz"
            disk.write_bytes(requests.get(f"{url}/datastore/label", params={"label": study, "tag": "final"},
                                          timeout=30).content)
            with reads.mask_file(study, held) as kept:
                if kept is None or not np.array_equal(np.asarray(nib.load(str(disk)).dataobj),
                                                      np.asarray(nib.load(str(kept[0])).dataobj)):
                    problems.append(f"{study}: the label on disk is not the file of {held}, the read it holds")
    finally:
        reads.close()
    return problems


def phase(root: Path, shared: Path, state_db: str | None, annotators: int, reviewers: int, seconds: float) -> dict:
    studies, versions, names = make_folder(root, shared)
    conf = {"atlases": str(root.parent / "atlases"), "skill_round": 1, "review": "true", "reads_per_study": 2}
    if state_db:
        conf["state_db"] = state_db
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(Server(studies, conf, root / f"server{k}.log", timeout_s=180))
                   for k in range(2 if state_db else 1)]
        clients = Clients([s.url for s in servers], versions, names, seconds)
        elapsed = clients.run(annotators, reviewers)
        time.sleep(3)  # the reward workers settle
        problems = check(servers[0].url, studies, state_db)
    if (Path.cwd() / "labels").exists():  # a save outside its studies folder (the servers run in this folder)
        problems.append(f"a labels folder appeared in the servers' working directory {Path.cwd()}")
    for log in root.glob("server*.log"):
        if "Traceback" in log.read_text():
            problems.append(f"a traceback in {log.name}")
    saves = sorted(clients.saves)
    return {"clients": f"{annotators} annotators, {reviewers} reviewers", "servers": 2 if state_db else 1,
            "requests_per_s": round(sum(clients.codes.values()) / elapsed, 1), "saves": len(saves),
            "save_median_ms": round(statistics.median(saves) * 1000) if saves else None,
            "save_p95_ms": round(saves[int(0.95 * (len(saves) - 1))] * 1000) if saves else None,
            "codes": dict(sorted(clients.codes.items())), "failures": clients.failures[:10],
            "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--state-db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    shared = need_shared_data()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        (root / "atlases").mkdir()
        (root / "atlases" / "ct-abdomen-pelvis").symlink_to(shared / "ct-abdomen-pelvis")
        url = None
        if args.state_db == "postgresql":
            sys.path.insert(0, str(REPO / "tests"))
            from postgres import PostgresServer

            server = PostgresServer(root / "postgres").start()
            stack.callback(server.stop)
            url = server.url
        rows = []
        for k, (annotators, reviewers) in enumerate(((1, 1), (6, 3))):
            db = None
            if url:  # a database of its own per phase
                import sqlalchemy

                engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.exec_driver_sql(f"CREATE DATABASE phase{k}")
                engine.dispose()
                db = url.rsplit("/", 1)[0] + f"/phase{k}"
            rows.append(phase(root / f"phase{k}", shared, db, annotators, reviewers, args.seconds))
    base = rows[0]
    for row in rows:
        row["vs_one_client"] = f"{row['requests_per_s'] / base['requests_per_s']:.2f}x"
        row["problems_found"] = len(row["problems"]) + len(row["failures"])
    print(table(rows, ["clients", "servers", "requests_per_s", "vs_one_client", "saves", "save_median_ms",
                       "save_p95_ms", "problems_found"]))
    for row in rows:
        print(row["clients"], json.dumps(row["codes"]))
        for line in row["failures"] + row["problems"]:
            print("  ", line)
    print("saved", save(f"review_concurrency_{args.state_db}", {"phases": rows}))
    return 1 if any(row["problems"] or row["failures"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
