"""`evaluate` on a PENGWIN-like pelvic case: sacrum, left and right hip bone, 12 wordings each (abbreviations,
typos, report and clinical styles), SEER (offline reasoner + atlas backbone) against the raw request.

The case is the pelvic part (z slices 0-66, 201 mm) of ../shared/data/ct-abdomen-pelvis; the only atlas holding
the three targets is the whole ct-abdomen-pelvis volume, i.e. the same patient. This is a crop registered back to
its own whole scan (a self-registration), not a leave-one-out: backbone Dice is optimistic, and what the figures
compare is how each side copes with the wording. The command runs twice on a fresh registration cache: cold (the
first target registers the atlas) and warm (registration cached on disk); the figures printed are the warm run's,
whose reasoning overhead compares reasoning with the warp alone. Run: python bench/bench_evaluate.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _util import REPO, need_shared_data, save

REQUESTS = {
    ("sacrum", 25): [
        "sacrum", "Segment the sacrum.", "sacrum pls", "sacrm", "the sacral bone", "os sacrum", "SACRUM",
        "Findings: lytic lesion abutting the sacrum. Please contour the sacrum.",
        "outline the sacrum for radiotherapy planning", "sacurm pls", "can u do the sacrum", "sacral bone, whole",
    ],
    ("hip_left", 77): [
        "left hip bone", "lt hip", "L hip bone", "left hipbone", "left innominate bone", "hip_left",
        "lft hip bone pls", "left hip boen", "Segment the left hip bone.", "os coxae sinistra",
        "contour the left hip bone for surgical planning", "Impression: fracture of the left hip bone. Outline it.",
    ],
    ("hip_right", 78): [
        "right hip bone", "rt hip", "R hip bone", "right hipbone", "right innominate bone", "hip_right",
        "rght hip bone pls", "right hip bnoe", "Segment the right hip bone.", "os coxae dextra",
        "contour the right hip bone for surgical planning", "Impression: fracture of the right hip bone. Outline it.",
    ],
}


def build(folder: Path, shared: Path) -> Path:
    """The pelvic crop, an atlas folder with the whole scan, and the manifest."""
    case = folder / "case"
    case.mkdir()
    for name in ("image", "labels"):
        image = nib.load(str(shared / "ct-abdomen-pelvis" / f"{name}.nii.gz"))
        data = np.asanyarray(image.dataobj)[:, :, 0:67]
        nib.save(nib.Nifti1Image(data, image.affine), str(case / f"{name}.nii.gz"))
    atlases = folder / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(shared / "ct-abdomen-pelvis")
    manifest = folder / "manifest.jsonl"
    rows = [{"image": str(case / "image.nii.gz"), "label": str(case / "labels.nii.gz"), "label_id": value,
             "label_name": name, "requests": requests, "dataset": "pengwin-like", "case_id": "pelvis-crop"}
            for (name, value), requests in REQUESTS.items()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main():
    shared = need_shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = build(folder, shared)
        env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(folder / "cache"))
        walls, overheads = {}, {}
        for run in ("cold", "warm"):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, str(REPO / "main.py"), "evaluate", str(manifest), "--output",
                                   str(folder / "out"), "--reasoner", "offline", "--atlases",
                                   str(folder / "atlases"), "--no-progress"], capture_output=True, text=True, env=env)
            walls[run] = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            overheads[run] = {t["target"]: t["reasoning_overhead"]
                              for t in json.loads((folder / "out" / "summary.json").read_text())["targets"]}
        print(proc.stdout)
        summary = json.loads((folder / "out" / "summary.json").read_text())
        cases = [json.loads(line) for line in (folder / "out" / "cases.jsonl").read_text().splitlines()]
        (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (folder / "out" / "dice_spread.png").replace(REPO / "bench" / "results" / "evaluate_dice_spread.png")
    print("SEER / raw, per target (lower std and higher worst case are better):")
    for t in summary["targets"]:
        std_ratio = t["std_across_variants"] / t["std_across_variants_raw"] if t["std_across_variants_raw"] else None
        print(f"  {t['target']:>9}: std {t['std_across_variants']:.3f} vs {t['std_across_variants_raw']:.3f} "
              f"(ratio {std_ratio if std_ratio is None else round(std_ratio, 3)}), worst {t['worst_case_dice']:.3f} vs "
              f"{t['worst_case_dice_raw']:.3f}, mean {t['mean_dice_seer']:.3f} vs {t['mean_dice_raw']:.3f}, "
              f"reasoning/segmentation {t['reasoning_overhead']}")
    misses = [c for c in cases if c["dice"] < 0.5]
    for c in misses:
        print(f"  SEER miss: {c['target']} '{c['request']}' -> {c['resolved']} ({c['refusal']})")
    print(f"wall time of the whole evaluate command: cold {walls['cold']:.1f} s, warm {walls['warm']:.1f} s")
    print(f"reasoning / segmentation, cold run (registration in the first target's segmentation): {overheads['cold']}")
    save("evaluate", {"summary": summary, "wall_s": walls, "overhead_cold": overheads["cold"], "cases": cases})


if __name__ == "__main__":
    main()
