"""The qwen-vl reasoner's speed options return the plain path's tokens: the adapter merged at load, the vision
encodings kept per view, the static key/value cache, stopping at </answer>, on a tiny real Qwen3-VL, with and
without the adapter, for a batch of requests of mixed lengths."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from seer.imaging.views import take_views
from seer.reasoning.hygiene import clean_request
from seer.reasoning.prompts import build_messages
from seer.reasoning.reasoners.base import ReasoningInput
from seer.reasoning.reasoners.qwen_vl import QwenVLEngine, QwenVLReasoner, QwenVLSettings

PLAIN = {"merge_adapter": False, "vision_cache": 0, "stop_at_answer": False, "kv_cache": "dynamic", "compile": False}
VARIANTS = {
    "merged": {"merge_adapter": True},
    "vision cache": {"vision_cache": 16},
    "static cache": {"kv_cache": "static"},
    "stop at </answer>": {"stop_at_answer": True},
    "all but compile": {"merge_adapter": True, "vision_cache": 16, "kv_cache": "static", "stop_at_answer": True},
}
REQUESTS = ["L5", "rt hip bone pls", "contour the enhancing mets in the left frontal lobe and the right cerebellum"]


def views(seed: int):
    volume = np.random.default_rng(seed).normal(size=(48, 40, 30)).astype(np.float32)
    volume += np.arange(30, dtype=np.float32)[None, None, :]
    return take_views(volume)


def engine(tiny_qwen, adapter, **options) -> QwenVLEngine:
    return QwenVLEngine(QwenVLSettings(model=str(tiny_qwen), adapter=str(adapter) if adapter else None,
                                       max_new_tokens=10, **{**PLAIN, **options}))


def batch_texts(engine: QwenVLEngine, studies) -> list[str]:
    """One generate call over REQUESTS, request i on study i (mixed prompt lengths, left padding)."""
    messages, images = [], []
    for request, study in zip(REQUESTS, studies, strict=True):
        rendered = study.images()
        messages.append(build_messages(rendered, clean_request(request).text, []))
        images.append(rendered)
    return [text for text, _ in engine._generate_batch(messages, images, 10)]


@pytest.fixture(scope="module")
def studies():
    return [views(seed) for seed in (1, 2, 1)]  # the third request is on the first study again


@pytest.mark.slow
@pytest.mark.parametrize("with_adapter", [True, False], ids=["adapter", "no adapter"])
def test_every_speed_option_returns_the_plain_paths_tokens(tiny_qwen, tiny_lora, studies, with_adapter):
    adapter = tiny_lora if with_adapter else None
    plain = batch_texts(engine(tiny_qwen, adapter), studies)
    assert len(set(plain)) > 1 or not with_adapter  # the requests differ, and so do their answers (the tiny base
    # model alone answers every request with the same run of newlines)
    variants = VARIANTS if with_adapter else {k: VARIANTS[k] for k in ("static cache", "all but compile")}
    for name, options in variants.items():
        fast = engine(tiny_qwen, adapter, **options)
        assert batch_texts(fast, studies) == plain, name
        assert batch_texts(fast, studies) == plain, f"{name}, second batch"  # vision encodings reused
        if fast.vision is not None:
            assert fast.vision.stats()["hits"] >= 3 * 8  # the second batch encoded no view again
        assert fast.merged is (with_adapter and options.get("merge_adapter", False))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SEER_TEST_COMPILE"), reason="compiling the decoding step takes from half a "
                    "minute to several minutes on 2 cores (C++ kernels); SEER_TEST_COMPILE=1 runs it")
def test_the_compiled_decoding_step_returns_the_plain_paths_tokens(tiny_qwen, tiny_lora, studies):
    """torch.compile of the decoding step over the static cache (on a CPU transformers is told to compile; the
    first batch compiles), with every other option on."""
    plain = batch_texts(engine(tiny_qwen, tiny_lora), studies)
    compiled = engine(tiny_qwen, tiny_lora, kv_cache="static", compile=True, merge_adapter=True, vision_cache=16,
                      stop_at_answer=True)
    assert batch_texts(compiled, studies) == plain
    assert batch_texts(compiled, studies) == plain  # the compiled step, reused


@pytest.mark.slow
def test_the_merged_adapters_logits_match_the_unmerged_ones(tiny_qwen, tiny_lora, studies):
    merged, unmerged = engine(tiny_qwen, tiny_lora, merge_adapter=True), engine(tiny_qwen, tiny_lora)
    assert merged.merged and not unmerged.merged
    rendered = studies[0].images()
    text = merged.render(build_messages(rendered, "liver", []))
    batch = merged.processor(text=[text], images=rendered, return_tensors="pt")
    with torch.inference_mode():
        a = merged.model(**batch).logits[0, -5:]
        b = unmerged.model(**batch).logits[0, -5:]
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


@pytest.mark.slow
def test_generation_stops_once_the_answer_is_closed(tiny_qwen, studies):
    """A bias towards "</answer>" makes the random model write it: with stop_at_answer the text ends there, and it is
    the plain path's text up to that point."""
    plain, stopping = engine(tiny_qwen, None), engine(tiny_qwen, None, stop_at_answer=True)
    closing = tuple(plain.processor.tokenizer("</answer>", add_special_tokens=False).input_ids)
    # each next token of "</answer>" weighs more than starting it again
    bias = {"sequence_bias": {closing[:i + 1]: 20.0 * (i + 1) for i in range(len(closing))}}
    plain.generate_kwargs, stopping.generate_kwargs = {**plain.generate_kwargs, **bias}, {
        **stopping.generate_kwargs, **bias}
    rendered = studies[0].images()
    messages = [build_messages(rendered, "liver", [])]
    (long, _), = plain._generate_batch(messages, [rendered], 24)
    (short, timings), = stopping._generate_batch(messages, [rendered], 24)
    assert "</answer>" in long and short.endswith("</answer>")
    assert long.startswith(short) and len(short) < len(long)
    assert timings["new_tokens"] < 24


@pytest.mark.slow
def test_the_reasoner_reuses_a_studys_vision_encoding(tiny_qwen, tiny_lora, studies):
    fast = engine(tiny_qwen, tiny_lora, vision_cache=16)
    reasoner = QwenVLReasoner(fast.settings, fast)
    for n, request in enumerate(("liver", "spleen")):
        reasoner.reason(ReasoningInput(clean_request(request), studies[0], None, [], None, study_key=f"s{n}",
                                       bank_version="v1"))
    assert fast.vision.stats() == {"items": 8, "hits": 8, "misses": 8}


def test_static_and_compile_settings_are_checked():
    from seer.errors import BadRequest
    from seer.settings import SeerSettings

    with pytest.raises(BadRequest, match="needs 'kv_cache' static"):
        SeerSettings.from_conf({"reasoner_compile": "true"})
    with pytest.raises(BadRequest, match="dynamic or static"):
        SeerSettings.from_conf({"kv_cache": "paged"})
    assert SeerSettings.from_conf({"reasoner_compile": "true", "kv_cache": "static"}).reasoner_compile
