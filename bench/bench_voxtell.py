"""VoxTell through our MONAI SlidingWindowInferer path vs VoxTell's own VoxTellPredictor: same tiny network
(the smallest architecture VoxTell accepts, ~362M parameters, random weights), same volume, CPU.

Each side runs in its own process (so peak RSS is its own): load, one warm-up prediction, then the median of 3
timed predictions of two prompts. Also reports the Dice between the two sides' masks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import REPO, need_shared_data, save, table

CHILD = r'''
import json, resource, statistics, sys, time
sys.path.insert(0, "{repo}/lib"); sys.path.insert(0, "{repo}/tests")
import numpy as np, torch
side, model, image, out = sys.argv[1:5]
prompts = ["liver", "left kidney"]
if side == "seer":
    from seer.segmentation.backbones.voxtell import VoxTellBackbone, VoxTellSettings
    from seer.imaging.volume import load_volume
    backbone = VoxTellBackbone(VoxTellSettings(model_dir=model, device="cpu"))
    volume = load_volume(image)
    run = lambda: backbone.predict(volume, prompts)
else:
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
    from voxtell.inference.predictor import VoxTellPredictor
    predictor = VoxTellPredictor(model_dir=model, device=torch.device("cpu"), embedding_bank=model + "/text_embeddings.npz")
    data, _ = NibabelIOWithReorient().read_images([image])
    run = lambda: predictor.predict_single_image(data, prompts)
masks = run()
times = []
for _ in range(3):
    start = time.perf_counter(); masks = run(); times.append(time.perf_counter() - start)
np.save(out, np.asarray(masks, dtype=bool))
print(json.dumps({{"seconds": statistics.median(times), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
'''


def main():
    shared = need_shared_data()
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "lib"))
    import nibabel as nib
    import numpy as np
    from tiny_models import build_tiny_voxtell

    from seer.imaging.volume import load_volume
    from seer.metrics import dice
    from seer.segmentation.backbones.voxtell import from_network_layout, to_network_layout

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_voxtell(tmp / "voxtell")
        image = nib.load(str(shared / "ct-abdomen-pelvis" / "image.nii.gz"))
        crop = np.asanyarray(image.dataobj)[30:90, 20:80, 30:78]  # (S, A, R) = 48 x 60 x 60: 4 patches of 48^3
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [30, 20, 30] + image.affine[:3, 3]
        nib.save(nib.Nifti1Image(crop, affine), str(tmp / "crop.nii.gz"))
        script = tmp / "child.py"
        script.write_text(CHILD.format(repo=REPO))
        rows, masks = [], {}
        for side in ("voxtell-predictor", "seer"):
            out = tmp / f"{side}.npy"
            proc = subprocess.run([sys.executable, str(script), side, str(model), str(tmp / "crop.nii.gz"), str(out)],
                                  capture_output=True, text=True, check=True)
            rows.append({"side": side, **json.loads(proc.stdout.strip().splitlines()[-1])})
            masks[side] = np.load(out)
        volume = load_volume(tmp / "crop.nii.gz")
        _, ornt = to_network_layout(volume.array, volume.affine)
        theirs = from_network_layout(masks["voxtell-predictor"], ornt, volume.shape)
        agreement = [dice(masks["seer"][i], theirs[i]) for i in range(2)]
    rows[1]["time_vs_predictor"] = rows[1]["seconds"] / rows[0]["seconds"]
    rows[1]["memory_vs_predictor"] = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(table(rows, ["side", "seconds", "peak_rss_mib", "time_vs_predictor", "memory_vs_predictor"]))
    print(f"Dice between the two sides' masks: liver {agreement[0]:.4f}, left kidney {agreement[1]:.4f}")
    save("voxtell_cpu", {"rows": rows, "dice": agreement})


if __name__ == "__main__":
    main()
