"""Server start and label-name keys: the packaged lexicon read once per process against reading it on every call.

1. `structure_key` (the meaning of a label name; each name's first key is computed at a server's start for every
   atlas target, later ones come from a per-name cache) over the names of the abdomen-pelvis CT's map and of the sample atlases' maps, with the
   lexicon cached (the product) and with `default_lexicon` replaced by its uncached builder (the baseline), in
   this process, medians of 5.
2. `python main.py serve` on a copy of the sample data (offline reasoner, atlas backbone): seconds from the
   process start to the first 200 from `/info/`, median of 3. The uncached figure is not measured by starting the
   server (the product has no switch for it); part 1 gives what the lexicon costs at start.

Usage: python bench/bench_server_start.py [--starts N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _util import REPO, free_port, need_sample_data, need_shared_data, save, table

from seer.reasoning import lexicon as lexicon_module
from seer.segmentation import atlases


def label_names(sample: Path, shared: Path) -> dict[str, list[str]]:
    ct = json.loads((shared / "ct-abdomen-pelvis" / "labels.json").read_text())
    sample_targets: list[str] = []
    for path in sorted((sample / "atlases").rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            sample_targets += [v for v in data.values() if isinstance(v, str)]
    return {"abdomen-pelvis CT map": list(ct.values()), "sample atlases' targets": sample_targets}


def keys_seconds(names: list[str], cached: bool) -> float:
    builder = lexicon_module.default_lexicon if cached else lexicon_module.default_lexicon.__wrapped__
    original = atlases.default_lexicon
    atlases.default_lexicon = builder
    try:
        times = []
        for _ in range(5):
            atlases.structure_key.cache_clear()  # each name's first key, as at a server's start
            started = time.perf_counter()
            for name in names:
                atlases.structure_key(name)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        atlases.default_lexicon = original


def start_seconds(sample: Path, starts: int) -> float:
    times = []
    for _ in range(starts):
        with tempfile.TemporaryDirectory() as folder:
            studies = Path(folder)
            for volume in sample.glob("*.nii.gz"):
                shutil.copy(volume, studies / volume.name)
            port = free_port()
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "serve", "--studies", str(studies),
                                     "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    cwd=str(REPO), start_new_session=True)
            try:
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"the server exited with {proc.returncode}")
                    try:
                        if requests.get(f"http://127.0.0.1:{port}/info/", timeout=2).status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    time.sleep(0.1)
                times.append(time.perf_counter() - started)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    sample, shared = need_sample_data(), need_shared_data()
    lexicon_module.default_lexicon()  # warm: the cached side's one read is not in its figure
    rows = []
    for what, names in label_names(sample, shared).items():
        cached, uncached = keys_seconds(names, True), keys_seconds(names, False)
        rows.append({"names": what, "count": len(names), "uncached_ms": round(uncached * 1000, 1),
                     "cached_ms": round(cached * 1000, 1), "ratio": f"{cached / uncached:.3f}x"})
    print(table(rows, ["names", "count", "uncached_ms", "cached_ms", "ratio"]))
    start = start_seconds(sample, args.starts)
    print(f"server start to the first /info/ (median of {args.starts}): {start:.2f} s")
    print("saved", save("server_start", {"structure_keys": rows, "server_start_s": start}))


if __name__ == "__main__":
    main()
