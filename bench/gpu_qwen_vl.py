"""GPU benchmark (run once on a lent H100/H200; nothing is downloaded): a Qwen3-VL-4B-sized network built from
its configuration with random bf16 weights, 8 slices of 448x448, exactly 256 new tokens (min = max = 256).

Measures every speed option of the qwen-vl reasoner side by side through the reasoner's own generation path
(bench/qwen_vl_variants.py): the plain path (unmerged LoRA r=16 on q/k/v/o, dynamic cache), the LoRA merged, the
vision cache, the static cache, the static cache compiled, and all together; per request (first and second on a
study), prompt and decode phases apart, batches of 1, 4 and 8, peak memory. Goal: one request under 2 s on an
H100. Then the docs' vLLM and SGLang recipe on the same model with its LoRA merged, each where its package is
installed on the machine (bench/serving_recipe.py), reported beside ours. Writes $OUT/gpu_qwen_vl.json when OUT is
set.

Usage on the device: python bench/gpu_qwen_vl.py [--part variants|serving|all]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

# Qwen3-VL-4B-Instruct sizes (config.json of the published model)
CONFIG = {
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 5_000_000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "max_position_embeddings": 262144, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2560, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
    "tie_word_embeddings": True,
}
NEW_TOKENS = 256


def save_merged(model, processor, folder: Path) -> Path:
    """`model` with its LoRA merged, and the processor, saved as a model folder the serving recipe reads."""
    model.merge_and_unload().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def serving(model_dir: Path, say) -> dict:
    """The vLLM / SGLang recipe on the merged model in `model_dir`, each where its package is installed."""
    from qwen_vl_variants import studies
    from serving_recipe import serving_figures

    from seer.reasoning.prompts import build_messages

    messages = [build_messages(v.images(), "rt hip bone pls", []) for v in studies(10, seed=1)]
    logs = Path(os.environ.get("OUT") or model_dir)
    return {kind: serving_figures(kind, model_dir, messages, NEW_TOKENS, logs, say=say) for kind in ("vllm", "sglang")}


def main():
    from qwen_vl_variants import build, measure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["variants", "serving", "all"], default="all")
    part = parser.parse_args().part
    assert torch.cuda.is_available(), "needs a CUDA device"
    device = torch.device("cuda")
    model, processor = build(CONFIG, device, torch.bfloat16)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    result = {"device": torch.cuda.get_device_name(0), "params_billion": round(params, 2), "new_tokens": NEW_TOKENS}
    print(json.dumps(result), flush=True)

    def say(line):  # partial figures, in case the run is cut short
        print(line, flush=True)
        if os.environ.get("OUT"):
            with Path(os.environ["OUT"], "gpu_qwen_vl.partial.txt").open("a") as out:
                out.write(line + "\n")

    if part in ("variants", "all"):
        result["variants"] = measure(model, processor, device, "bfloat16", NEW_TOKENS, batches=(1, 4, 8), say=say)
        result["goal_under_2s_batch1"] = {name: row["first_request_s"] < 2.0
                                          for name, row in result["variants"].items()}
    if part in ("serving", "all") and not any(importlib.util.find_spec(kind) for kind in ("vllm", "sglang")):
        result["serving"] = {kind: {"absent": f"the {kind} package is not installed on this machine"}
                             for kind in ("vllm", "sglang")}
        say("serving recipe: neither vllm nor sglang is installed on this machine")
    elif part in ("serving", "all"):
        with tempfile.TemporaryDirectory(prefix="seer-merged-") as folder:
            model_dir = save_merged(model, processor, Path(folder))
            del model  # the servers get the whole GPU
            gc.collect()
            torch.cuda.empty_cache()
            result["serving"] = serving(model_dir, say)
        plain = result.get("variants", {}).get("plain")
        for row in result["serving"].values():
            if plain and "first_request_s" in row:
                row["first_vs_plain"] = row["first_request_s"] / plain["first_request_s"]
    print(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_qwen_vl.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
