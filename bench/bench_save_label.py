"""`PUT /datastore/label` latency with the reward hook (`rewards true`, the default) against without it
(`rewards false`): two real servers over identical datastores, measured in the same run, taking turns.

Each round uses a fresh study (a copy of the abdomen CT slab; its atlas registration is cached by content, so
proposals are warm): two proposals, then PUT #1 of the final label with the worker idle (what the hook itself
costs on the request path: the goal, at most 1.05x), then PUT #2 at once, which on the hooked server lands while
the worker computes the rewards that PUT #1 queued (the cost of sharing 2 cores and the GIL with that work).
The next turn waits until the hooked server's worker is idle. Run: python bench/bench_save_label.py
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests
from _util import Server, need_shared_data, save, table

ROUNDS = 25
PROMPTS = ["liver", "livr", "splen pls", "lt kidney", "rt kidney", "the liver please", "spleen"]


@contextlib.contextmanager
def server(studies: Path, atlases: Path, rewards: bool, log: Path):
    with Server(studies, {"atlases": atlases, "rewards": str(rewards).lower()}, log, timeout_s=180) as running:
        yield running.url


def put(url: str, study: str, label: Path, params: dict) -> float:
    with open(label, "rb") as fp:
        started = time.perf_counter()
        response = requests.put(f"{url}/datastore/label", params={"image": study, "tag": "final"},
                                data={"params": json.dumps(params)}, files={"label": ("labels.nii.gz", fp)},
                                timeout=60)
        seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"PUT failed: {response.status_code} {response.text[:300]}")
    return seconds


def infer(url: str, study: str, prompt: str) -> None:
    response = requests.post(f"{url}/infer/seer", params={"image": study, "output": "json"},
                             data={"params": json.dumps({"prompt": prompt})}, timeout=300)
    if response.status_code != 200:
        raise SystemExit(f"infer failed: {response.text[:300]}")


def wait_idle(url: str, expected: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        info = requests.get(f"{url}/info/", timeout=10).json()["seer"]
        if info["rewards"] >= expected and info["rewards_queued"] == 0:
            return
        time.sleep(0.05)
    raise SystemExit("rewards did not arrive")


def datastores(root: Path, shared: Path, names: tuple[str, ...], rounds: int) -> tuple[Path, dict[str, Path]]:
    """(an atlas folder holding the pelvis CT, one studies folder per name with rounds + 1 copies of the abdomen CT
    slab: ct_00 .. ct_NN)."""
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(shared / "ct-abdomen-pelvis")
    folders = {}
    for name in names:
        folders[name] = root / name
        folders[name].mkdir()
        for i in range(rounds + 1):
            shutil.copy(shared / "ct-abdomen-small" / "image.nii.gz", folders[name] / f"ct_{i:02d}.nii.gz")
    return atlases, folders


def main():
    shared = need_shared_data()
    label = shared / "ct-abdomen-small" / "labels.nii.gz"
    names = json.loads((shared / "ct-abdomen-small" / "labels.json").read_text())
    params = {"label_names": {name: int(value) for value, name in names.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        atlases, folders = datastores(root, shared, ("hook", "nohook"), ROUNDS)
        times = {(name, which): [] for name in ("hook", "nohook") for which in ("idle", "busy")}
        with server(folders["hook"], atlases, True, root / "hook.log") as hook, \
                server(folders["nohook"], atlases, False, root / "nohook.log") as nohook:
            urls = {"hook": hook, "nohook": nohook}
            for url in urls.values():  # warm: the registration (cached by content for every copy), a first save
                infer(url, "ct_00", "liver")
                put(url, "ct_00", label, params)
            rewarded = 1
            wait_idle(hook, rewarded)
            for i in range(1, ROUNDS + 1):
                study = f"ct_{i:02d}"
                for name in (("hook", "nohook") if i % 2 == 0 else ("nohook", "hook")):
                    url = urls[name]
                    for prompt in (PROMPTS[i % len(PROMPTS)], PROMPTS[(i + 3) % len(PROMPTS)]):
                        infer(url, study, prompt)
                    if name == "hook":
                        wait_idle(hook, rewarded)
                    times[name, "idle"].append(put(url, study, label, params))
                    times[name, "busy"].append(put(url, study, label, params))
                    if name == "hook":
                        rewarded += 2
                        wait_idle(hook, rewarded)
            info = requests.get(f"{hook}/info/", timeout=10).json()["seer"]
    rows = []
    for which, what in (("idle", "PUT #1, worker idle"), ("busy", "PUT #2, worker rewarding PUT #1")):
        base, hooked = times["nohook", which], times["hook", which]
        rows.append({"measure": what, "puts": len(base), "median_ms_without": statistics.median(base) * 1000,
                     "median_ms_with": statistics.median(hooked) * 1000,
                     "ratio_median": statistics.median(hooked) / statistics.median(base),
                     "ratio_mean": statistics.fmean(hooked) / statistics.fmean(base)})
    print(table(rows, ["measure", "puts", "median_ms_without", "median_ms_with", "ratio_median", "ratio_mean"]))
    print(f"goal: PUT #1 ratio at most 1.05x -> {'met' if rows[0]['ratio_median'] <= 1.05 else 'NOT met'}")
    print(f"hooked server after the run: {info}")
    save("save_label", {"rows": rows, "info": info, "times": {f"{k[0]}/{k[1]}": v for k, v in times.items()}})


if __name__ == "__main__":
    main()
