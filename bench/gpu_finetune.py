"""GPU benchmark (run once on a lent H100/H200; nothing is downloaded): `finetune` on a Qwen3-VL-4B-sized network
built from its configuration with random bf16 weights (saved with save_pretrained, then loaded by the same code as
the published base), a new LoRA (r 16 on the language model's projections), bf16, 8 views of 448 x 448.

Measures steps/s and peak GPU memory at batch 1 and 4 (10 steps each, through transformers' Trainer), with the
plain-loop baseline of bench_finetune.py left to the CPU run. Writes $OUT/gpu_finetune.json when OUT is set.

Usage on the device: python bench/gpu_finetune.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_qwen_vl import CONFIG  # noqa: E402 - the Qwen3-VL-4B-Instruct sizes
from tiny_models import qwen_processor  # noqa: E402


def build_base(folder: Path) -> Path:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**CONFIG)).to(torch.bfloat16)
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(folder)
    qwen_processor().save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def main() -> None:
    import nibabel as nib
    import torch

    from seer.training.finetune import FinetuneSettings, finetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        base = build_base(tmp / "base")
        build_s = time.perf_counter() - started
        rng = np.random.default_rng(0)
        rows = []
        for i in range(8):
            path = tmp / f"study{i}.nii.gz"
            nib.save(nib.Nifti1Image(rng.normal(size=(96, 96, 64)).astype(np.float32), np.eye(4)), path)
            rows.append({"image": str(path), "raw_prompt": f"request {i}", "dice": 0.9,
                         "trace": "<evidence>CT.</evidence><rationale>The request means the liver.</rationale>"
                                  "<answer>liver</answer>"})
        (tmp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for batch in (1, 4):
            torch.cuda.reset_peak_memory_stats()
            report = finetune(FinetuneSettings(
                traces=str(tmp / "rows.jsonl"), model=str(base), output=str(tmp / f"adapter-{batch}"),
                max_steps=args.steps, batch_size=batch, lr=1e-4, eval_fraction=0, save_steps=10_000,
                max_new_tokens=8, device="cuda", dtype="bfloat16", progress=False))
            results.append({"batch": batch, "seconds_per_step": report["seconds_per_step"],
                            "steps_per_s": round(1 / report["seconds_per_step"], 3),
                            "examples_per_s": round(batch / report["seconds_per_step"], 3),
                            "peak_gpu_mb": report["peak_gpu_mb"], "load_s": report["load_s"],
                            "trainable_parameters": report["lora"]["trainable_parameters"]})
            print(json.dumps(results[-1]), flush=True)
    payload = {"gpu": torch.cuda.get_device_name(0), "steps": args.steps, "build_s": round(build_s, 1),
               "results": results,
               "batch4_vs_batch1_examples_per_s": round(results[1]["examples_per_s"] / results[0]["examples_per_s"],
                                                        2)}
    print(json.dumps(payload, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_finetune.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
