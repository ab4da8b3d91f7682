"""/infer/seer latency on a 1 mm brain through the real server, split by stage, against the backbone called
directly in-process (same registrations, warm), plus the server's resident memory.

Baseline = `AtlasBackbone.segment(volume, entry, evidence)` with the study loaded and registrations in memory:
what a script calling the backbone itself would pay. App = wall time of POST /infer/seer (HTTP, multipart reply
with the mask) measured by the client. Ratio = app / baseline, per target, medians of 5 repeated requests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from _util import REPO, Timer, need_sample_data, save, table

from seer.imaging.volume import load_volume
from seer.pipeline import SeerPipeline
from seer.reasoning.reasoners.offline import OfflineReasoner
from seer.reasoning.skills import SkillBank
from seer.reasoning.targets import Resolver
from seer.segmentation.atlases import LabelRegistry, bundled_atlases
from seer.segmentation.backbones.atlas import AtlasBackbone

REPEATS = 5
CASES = [("mni152_t1", "left hippocampus"), ("mni152_t1", "right amygdala"), ("colin27_t1", "white matter"),
         ("colin27_t1", "brain")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url, image, prompt):
    with Timer() as t:
        response = requests.post(f"{url}/infer/seer", params={"image": image},
                                 data={"params": json.dumps({"prompt": prompt})}, timeout=600)
    if response.status_code != 200:
        raise SystemExit(f"{prompt!r} on {image}: {response.status_code} {response.text[:300]}")
    params = json.loads(response.headers.get("content-type", "").startswith("multipart") and
                        _params_from_multipart(response) or response.text)
    return t.seconds, params, len(response.content)


def _params_from_multipart(response) -> str:
    from requests_toolbelt.multipart import decoder

    for part in decoder.MultipartDecoder.from_response(response).parts:
        if b'name="params"' in part.headers.get(b"Content-Disposition", b""):
            return part.text
    raise SystemExit("no params part in the reply")


def main():
    sample = need_sample_data()
    with tempfile.TemporaryDirectory() as tmp_name:
        studies = Path(tmp_name) / "studies"
        studies.mkdir()
        for name in ("mni152_t1", "colin27_t1"):
            shutil.copy(sample / f"{name}.nii.gz", studies / f"{name}.nii.gz")
        port = free_port()
        start = time.perf_counter()
        with open(Path(tmp_name) / "server.log", "w") as log:
            proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "serve", "--studies", str(studies),
                                     "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.5)
                if proc.poll() is not None or time.perf_counter() - start > 180:
                    raise SystemExit("server did not start; see its log")
            startup_s = time.perf_counter() - start
            rss_start = psutil.Process(proc.pid).memory_info().rss / 2**20
            rows = []
            first = {}
            for image, prompt in CASES:
                seconds, params, size = post(url, image, prompt)
                first[(image, prompt)] = (seconds, params)
                walls, splits = [], []
                for _ in range(REPEATS):
                    seconds_r, params_r, size = post(url, image, prompt)
                    walls.append(seconds_r)
                    splits.append(params_r["latencies"])
                med = {k: statistics.median(s[k] for s in splits) for k in splits[0] if k.endswith("_s")}
                rows.append({"image": image, "prompt": prompt, "first_s": seconds,
                             "first_backbone_s": params["latencies"]["backbone_s"],
                             "repeat_wall_s": statistics.median(walls), **{f"repeat_{k}": v for k, v in med.items()},
                             "reply_kB": size / 1024, "voxels": params_r["voxels"]})
            rss_after = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        # baseline: the backbone called directly, warm (same disk cache of registrations as the server)
        backbone = AtlasBackbone(lambda: bundled_atlases([sample / "atlases"]), LabelRegistry(),
                                 cache_dir=studies / ".seer")
        pipeline = SeerPipeline(OfflineReasoner(), backbone, SkillBank.starter())
        for row in rows:
            volume = load_volume(studies / f"{row['image']}.nii.gz")
            evidence = pipeline.context(volume).evidence
            entry = Resolver(backbone.label_table()).resolve(row["prompt"], evidence.region).entry
            backbone.segment(volume, entry, evidence)  # warm: registration from disk into memory
            times = []
            for _ in range(REPEATS):
                with Timer() as t:
                    backbone.segment(volume, entry, evidence)
                times.append(t.seconds)
            row["direct_backbone_s"] = statistics.median(times)
            row["app_over_direct"] = row["repeat_wall_s"] / row["direct_backbone_s"]
    columns = ["image", "prompt", "first_s", "repeat_wall_s", "repeat_views_s", "repeat_reasoning_s",
               "repeat_backbone_s", "repeat_write_s", "direct_backbone_s", "app_over_direct", "reply_kB"]
    print(table(rows, columns))
    print(f"\nserver start-up: {startup_s:.1f} s to first /info; RSS {rss_start:.0f} MiB after start-up, "
          f"{rss_after:.0f} MiB after {len(CASES) * (REPEATS + 1)} requests")
    save("infer_latency", {"rows": rows, "startup_s": startup_s, "rss_start_mib": rss_start, "rss_after_mib": rss_after})


if __name__ == "__main__":
    main()
