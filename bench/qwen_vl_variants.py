"""The qwen-vl reasoner's speed options measured side by side on one random Qwen3-VL (shared by
bench_qwen_vl_speed.py on the CPU and gpu_qwen_vl.py on a GPU).

Each variant is a QwenVLEngine (the reasoner's own generation path) over a fresh copy of the same model with a LoRA
adapter (r=16 on q/k/v/o of the language model, random non-zero weights), so every variant computes the same
function. The request is the contract's prompt with the 8 views of a study; generation is greedy with exactly
`new_tokens` new tokens (min = max; random weights never write </answer>, so stop_at_answer changes nothing here).

Per variant: the first request on a study (its views encoded), a second request on the same study (the vision
cache's case), the prompt phase alone (1 new token, with the study's views kept when the variant keeps them) and the
decode phase per token (second request minus prompt phase, over the other tokens), batches of 4 and 8 requests on
4 / 8 other studies, and the peak memory (CUDA) or the process's peak RSS (CPU, cumulative over the variants).
Times are the best of 3 after a warm-up (the warm-up compiles, in the compiled variants).
"""

from __future__ import annotations

import copy
import gc
import resource
import time

import numpy as np
import torch

VARIANTS = {
    "plain": {"merge_adapter": False, "vision_cache": 0, "kv_cache": "dynamic", "compile": False},
    "merged": {"merge_adapter": True, "vision_cache": 0, "kv_cache": "dynamic", "compile": False},
    "merged+vision": {"merge_adapter": True, "vision_cache": 256, "kv_cache": "dynamic", "compile": False},
    "merged+static": {"merge_adapter": True, "vision_cache": 0, "kv_cache": "static", "compile": False},
    "merged+static+compile": {"merge_adapter": True, "vision_cache": 0, "kv_cache": "static", "compile": True},
    "all": {"merge_adapter": True, "vision_cache": 256, "kv_cache": "static", "compile": True},
}


def build(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(a random Qwen3-VL with a LoRA adapter on `device`, the Qwen processor)."""
    from peft import LoraConfig, get_peft_model
    from tiny_models import qwen_processor
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**config)).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False)
    # the language model's projections only (the vision tower names its attention `qkv` and `proj`)
    peft_model = get_peft_model(model, lora).eval()
    return peft_model, qwen_processor()


def studies(count: int, seed: int = 0) -> list:
    from seer.imaging.views import take_views

    rng = np.random.default_rng(seed)
    return [take_views(rng.normal(size=(128, 128, 96)).astype(np.float32)) for _ in range(count)]


def variant_figures(engine, views, requests, device, new_tokens: int, batches) -> dict:
    """One engine's figures (see the module docstring); times are the best of 3 after a warm-up."""

    def run(indexes, tokens=new_tokens):
        engine.generate_kwargs["min_new_tokens"] = tokens  # exactly `tokens` new tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = engine._generate_batch([requests[i] for i in indexes], [views[i].images() for i in indexes], tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert all(t["new_tokens"] == tokens for _, t in out)
        return time.perf_counter() - started

    def first_request():
        if engine.vision is not None:
            engine.vision.clear()  # study 0's views are new to the engine again
        return run([0])

    warmup = run([0])  # compiles, when compiled
    firsts = [first_request() for _ in range(3)]
    seconds = [run([0]) for _ in range(3)]  # the views of study 0 are kept now (with the vision cache)
    run([0], 1)
    prompt = min(run([0], 1) for _ in range(3))
    row = {"warmup_s": warmup, "first_request_s": min(firsts), "second_request_s": min(seconds), "prompt_s": prompt,
           "decode_ms_per_token": (min(seconds) - prompt) / (new_tokens - 1) * 1000}
    for n in batches:
        if n > 1:
            run(list(range(1, n + 1)))  # compiles this batch size, when compiled
            row[f"batch{n}_requests_per_s"] = n / min(run(list(range(1, n + 1))) for _ in range(2))
    row["peak_memory_gib"] = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return row


def measure(model, processor, device: torch.device, dtype_name: str, new_tokens: int, batches=(1, 4, 8),
            variants=VARIANTS, say=print) -> dict:
    from seer.reasoning.prompts import build_messages
    from seer.reasoning.reasoners.qwen_vl import QwenVLEngine, QwenVLSettings

    views = studies(1 + max(batches), seed=1)
    requests = [build_messages(v.images(), "rt hip bone pls", []) for v in views]
    results = {}

    for name, options in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        engine = QwenVLEngine(QwenVLSettings(model="(in memory)", adapter="(in memory)", device=str(device),
                                             dtype=dtype_name, max_new_tokens=new_tokens, stop_at_answer=True,
                                             **options), loaded=(copy.deepcopy(model), processor))
        results[name] = row = variant_figures(engine, views, requests, device, new_tokens, batches)
        say(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        del engine
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = results["plain"]
    for row in results.values():
        row["first_vs_plain"] = row["first_request_s"] / base["first_request_s"]
        row["second_vs_plain"] = row["second_request_s"] / base["second_request_s"]
        row["decode_vs_plain"] = row["decode_ms_per_token"] / base["decode_ms_per_token"]
    return results
