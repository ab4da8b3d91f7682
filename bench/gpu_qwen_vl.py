"""GPU benchmark (run once on a lent H100/H200; nothing is downloaded): a Qwen3-VL-4B-sized network built from
its configuration with random bf16 weights, 8 slices of 448x448, exactly 256 new tokens (min = max = 256).

Measures seconds per request without LoRA, with an unmerged LoRA (peft, r=16 on q/k/v/o of the language model)
and merged, and batched throughput (requests/s at batch 1, 4, 8). Goal: one request under 2 s on an H100.
Writes $OUT/gpu_qwen_vl.json when OUT is set.

Usage on the device: python bench/gpu_qwen_vl.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "tests"))

from tiny_models import qwen_processor  # noqa: E402

from seer.imaging.views import take_views  # noqa: E402
from seer.reasoning.prompts import build_messages  # noqa: E402

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


def timed_generate(model, inputs, repeats=3):
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 use_cache=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert out.shape[1] - inputs["input_ids"].shape[1] == NEW_TOKENS
    return float(np.median(times))


def main():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    assert torch.cuda.is_available(), "needs a CUDA device"
    device = torch.device("cuda")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with device:
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**CONFIG)).eval()
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    processor = qwen_processor()
    processor.tokenizer.padding_side = "left"
    views = take_views(np.random.default_rng(0).normal(size=(256, 256, 160)).astype(np.float32))
    images = views.images()
    text = processor.apply_chat_template(build_messages(images, "rt hip bone pls"), tokenize=False,
                                         add_generation_prompt=True)

    def batch_inputs(n):
        inputs = processor(text=[text] * n, images=images * n, return_tensors="pt", padding=True).to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        return inputs

    result = {"device": torch.cuda.get_device_name(0), "params_billion": round(params, 2), "new_tokens": NEW_TOKENS,
              "attention": model.config._attn_implementation, "prompt_tokens": int(batch_inputs(1)["input_ids"].shape[1])}
    print(json.dumps(result), flush=True)
    one = batch_inputs(1)
    timed_generate(model, one, repeats=1)  # warm-up
    result["no_lora_s"] = timed_generate(model, one)
    print(json.dumps(result), flush=True)  # partial figures, in case the run is cut short
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                        "o_proj"],
                                                  init_lora_weights=False)).eval()
    timed_generate(peft_model, one, repeats=1)
    result["lora_unmerged_s"] = timed_generate(peft_model, one)
    print(json.dumps(result), flush=True)  # partial figures, in case the run is cut short
    merged = peft_model.merge_and_unload()
    result["lora_merged_s"] = timed_generate(merged, one)
    print(json.dumps(result), flush=True)  # partial figures, in case the run is cut short
    for n in (1, 4, 8):
        seconds = timed_generate(merged, batch_inputs(n), repeats=2)
        result[f"batch{n}_requests_per_s"] = n / seconds
        print(json.dumps(result), flush=True)  # partial figures, in case the run is cut short
    result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["lora_overhead"] = result["lora_unmerged_s"] / result["no_lora_s"]
    result["batch8_vs_batch1"] = result["batch8_requests_per_s"] / result["batch1_requests_per_s"]
    print(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_qwen_vl.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
