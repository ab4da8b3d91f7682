"""`reason --batch` throughput after load, and the cost of loading.

In-process: the pipeline is built and warmed (label maps parsed, study evidence cached), then N requests cycling
through bench/data/requests.jsonl (each with its study image and label map) are reasoned; requests/s reported.
CLI: `python main.py reason --batch FILE` wall time for the same N lines, which includes interpreter start,
imports, loading the volumes and label maps once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import REPO, Timer, need_shared_data, save

N = 2000


def main():
    shared = need_shared_data()
    rows = [json.loads(line) for line in (REPO / "bench" / "data" / "requests.jsonl").read_text().splitlines() if line]
    lines = []
    for i in range(N):
        row = rows[i % len(rows)]
        lines.append({"request": row["request"], "image": str(shared / row["dataset"] / "image.nii.gz"),
                      "labels": str(shared / row["dataset"] / "labels.json")})
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch.jsonl"
        batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")

        from seer.commands import reason_row
        from seer.imaging.volume import VolumeCache
        from seer.pipeline import build_pipeline
        from seer.settings import SeerSettings

        with Timer() as load:
            pipeline = build_pipeline(SeerSettings.from_conf({}), None, with_backbone=False)
            volumes, tables = VolumeCache(), {}
            for row in lines[: len(rows)]:  # warm-up: one pass over the distinct requests
                reason_row(pipeline, row["request"], row["image"], row["labels"], volumes, tables)
        with Timer() as run:
            out = [reason_row(pipeline, x["request"], x["image"], x["labels"], volumes, tables) for x in lines]
        in_process = N / run.seconds

        with Timer() as whole:
            proc = subprocess.run([sys.executable, str(REPO / "main.py"), "reason", "--batch", str(batch)],
                                  capture_output=True, text=True, check=True)
        cli_rows = proc.stdout.splitlines()
    assert len(cli_rows) == N and len(out) == N
    print(f"in-process after load: {in_process:.0f} requests/s ({1000 / in_process:.2f} ms/request), "
          f"load + warm-up {load.seconds:.2f} s")
    print(f"CLI `reason --batch` of {N} lines: {whole.seconds:.2f} s wall = {N / whole.seconds:.0f} requests/s "
          "including start-up")
    print(f"ratio to the 50 requests/s goal: {in_process / 50:.1f}x (in-process), {N / whole.seconds / 50:.1f}x (CLI)")
    save("reason_batch", {"n": N, "in_process_rps": in_process, "load_s": load.seconds, "cli_wall_s": whole.seconds})


if __name__ == "__main__":
    main()
