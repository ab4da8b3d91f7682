"""`simulate-al` on the data we have: AUBC of strategy `seer` against random, foreground-aware random and first.

What it is: a field-of-view scenario, not a cross-patient study. ../shared/data holds too few patients with the
same structures for one: the pelvis CT, its upper-abdomen slab (the same scan, z 82-112), a spleen CT crop and an
abdominal MRI. The pool is five 40-slice crops of the pelvis CT (z 0-40, 20-60, 40-80, 55-95, 72-112; only the
last two show the spleen), the held-out case is the upper-abdomen slab (same patient), campaign "spleen", budget
3 labels. Every strategy starts with one atlas of another patient and modality (the abdominal MRI). Atlas
backbone, offline reasoner. `seer` and `first` are deterministic; random and foreground-aware random run with
seeds 0, 1, 2 and their AUBC is averaged.

With --reads 2: each picked crop is read by two simulated annotators, 20 % of reads careless (label eroded by two
voxels or shifted by three), drawn per seed; strategy `seer` runs without review (the newest read is the label) and
with review (a reviewer approves the first careful read), seeds 0-3, same seeds for both. Goal: no careless read
teaches with review, and the curve with review is at least as high.

Run: python bench/bench_simulate_al.py [--reads 2]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _util import REPO, need_shared_data, save, table

CROPS = {"crop_z0-40": (0, 40), "crop_z20-60": (20, 60), "crop_z40-80": (40, 80), "crop_z55-95": (55, 95),
         "crop_z72-112": (72, 112)}
HELD_OUT = "heldout_slab_z82-112"
SEEDS = (0, 1, 2)


def build(root: Path, data: Path) -> tuple[Path, Path]:
    import nibabel as nib

    cases = root / "cases"
    cases.mkdir()
    image = nib.load(str(data / "ct-abdomen-pelvis" / "image.nii.gz"))
    labels = nib.load(str(data / "ct-abdomen-pelvis" / "labels.nii.gz"))
    for name, (z0, z1) in CROPS.items():
        folder = cases / name
        folder.mkdir()
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [0, 0, z0] + image.affine[:3, 3]
        for what, img in (("image", image), ("labels", labels)):
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, z0:z1], affine), str(folder / f"{what}.nii.gz"))
        shutil.copy(data / "ct-abdomen-pelvis" / "labels.json", folder / "labels.json")
    (cases / HELD_OUT).symlink_to(data / "ct-abdomen-small")
    seed_atlases = root / "seed-atlases"
    seed_atlases.mkdir()
    (seed_atlases / "mr-abdomen").symlink_to(data / "mr-abdomen-small")
    return cases, seed_atlases


READ_SEEDS = (0, 1, 2, 3)


def simulate(cases: Path, atlases: Path, out: Path, strategies: str, seed: int, extra: tuple = ()) -> dict:
    args = [sys.executable, str(REPO / "main.py"), "simulate-al", "--studies", str(cases), "--campaign", "spleen",
            "--steps", "3", "--held-out", HELD_OUT, "--atlases", str(atlases), "--strategies", strategies,
            "--seed", str(seed), "--output", str(out), "--no-progress", *extra]
    subprocess.run(args, check=True)
    return json.loads((out / "aubc.json").read_text())


def with_reads(reads: int) -> None:
    """`seer` without and with review, several reads per crop, 20 % careless, seeds READ_SEEDS."""
    data = need_shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases, atlases = build(root, data)
        runs = [simulate(cases, atlases, root / f"reads{seed}", "seer", seed,
                         ("--reads", str(reads), "--careless", "0.2")) for seed in READ_SEEDS]
    rows = []
    for variant in ("seer", "seer+review"):
        found = [r["strategies"][variant] for r in runs]
        picks = [p for f in found for p in f["picks"]]
        careless = sum(how != "careful" for p in picks for how in p["reads"])
        taught_careless = sum(p["taught"] is not None and p["reads"][p["taught"]] != "careful" for p in picks)
        rows.append({"variant": variant, "seeds": len(found), "aubc_mean": float(np.mean([f["aubc"] for f in found])),
                     "final_dice_mean": float(np.mean([f["final_dice"] for f in found])),
                     "careless_reads": careless, "careless_taught": taught_careless,
                     "cases_not_taught": sum(p["taught"] is None for p in picks),
                     "aubc_per_seed": [f["aubc"] for f in found]})
    print(table(rows, ["variant", "seeds", "aubc_mean", "final_dice_mean", "careless_reads", "careless_taught",
                       "cases_not_taught", "aubc_per_seed"]))
    ahead = all(b >= a for a, b in zip(rows[0]["aubc_per_seed"], rows[1]["aubc_per_seed"], strict=True))
    print(f"review: careless reads that taught {rows[1]['careless_taught']} (without: {rows[0]['careless_taught']}); "
          f"AUBC with review at least as high on every seed: {'yes' if ahead else 'NO'}")
    save("simulate_al_reads", {"rows": rows, "runs": runs})


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=1, help="reads per crop; 2 or more compares review (see above)")
    if (reads := parser.parse_args().reads) > 1:
        with_reads(reads)
        return
    data = need_shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases, atlases = build(root, data)
        runs = [simulate(cases, atlases, root / "out0", "seer,random,fg-random,first", SEEDS[0])]
        for seed in SEEDS[1:]:
            runs.append(simulate(cases, atlases, root / f"out{seed}", "random,fg-random", seed))
        plot = root / "out0" / "dice_vs_budget.png"
        if plot.exists():
            (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
            shutil.copy(plot, REPO / "bench" / "results" / "simulate_al_dice_vs_budget.png")
    rows = []
    for strategy in ("seer", "random", "fg-random", "first"):
        found = [r["strategies"][strategy] for r in runs if strategy in r["strategies"]]
        rows.append({"strategy": strategy, "runs": len(found),
                     "aubc_mean": float(np.mean([f["aubc"] for f in found])),
                     "aubc_min": min(f["aubc"] for f in found), "aubc_max": max(f["aubc"] for f in found),
                     "final_dice_mean": float(np.mean([f["final_dice"] for f in found])),
                     "curves": [f["curve"] for f in found]})
    print(table(rows, ["strategy", "runs", "aubc_mean", "aubc_min", "aubc_max", "final_dice_mean"]))
    best_random = max(r["aubc_mean"] for r in rows if r["strategy"] in ("random", "fg-random"))
    print(f"seer AUBC / best random AUBC: {rows[0]['aubc_mean'] / best_random:.2f}x "
          "(field-of-view scenario, one patient's crops: see the docstring)")
    save("simulate_al", {"rows": rows, "runs": runs})


if __name__ == "__main__":
    main()
