"""GPU benchmark (run once on a lent H100/H200; nothing is downloaded): VoxTell at the published size with random
bf16-autocast weights on a 256^3 volume, through our MONAI sliding-window path, one prompt. Anchor: VISTA3D takes
3.03 s for 256^3 on an H100; goal: under 3 s.

Architecture, as far as the voxtell package fixes it: encoder channels 32, 64, 128, 256, 320, 320 and a 192^3
patch (VoxTellModel.DECODER_CONFIGS: stage 0 at 192^3, stage 4 at 12^3), strides 1, 2, 2, 2, 2, 2, 3^3 kernels,
nnU-Net ResEnc-L blocks per stage 1, 3, 4, 6, 6, 6, one conv per decoder stage, a 6-layer 2048-wide prompt
decoder over 2560-d text embeddings. Writes $OUT/gpu_voxtell.json when OUT is set.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "tests"))


def main():
    import nibabel as nib
    from tiny_models import build_tiny_voxtell, tiny_voxtell_plans

    from seer.imaging.volume import load_volume
    from seer.segmentation.backbones.voxtell import VoxTellBackbone, VoxTellSettings

    assert torch.cuda.is_available(), "needs a CUDA device"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plans = tiny_voxtell_plans(patch=192)
        arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * 5
        arch["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6]
        model = build_tiny_voxtell(tmp / "voxtell", plans=plans)
        rng = np.random.default_rng(0)
        volume = rng.normal(size=(256, 256, 256)).astype(np.float32) * 100
        nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.0, 1.0])), str(tmp / "v.nii.gz"))
        backbone = VoxTellBackbone(VoxTellSettings(model_dir=str(model), device="cuda", dtype="bfloat16"))
        params = sum(p.numel() for p in backbone.network.parameters()) / 1e6
        study = load_volume(tmp / "v.nii.gz")
        backbone.predict(study, ["liver"])  # warm-up (cudnn autotune)
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            backbone.predict(study, ["liver"])
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        result = {"device": torch.cuda.get_device_name(0), "params_million": round(params, 1),
                  "patch": [192, 192, 192], "volume": [256, 256, 256], "seconds_median": float(np.median(times)),
                  "seconds_all": times, "vs_vista3d_3.03s": float(np.median(times)) / 3.03,
                  "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_voxtell.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
