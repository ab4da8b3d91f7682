"""The SEER VLM reasoner: Qwen3-VL (+ the SEER LoRA adapter) through transformers and peft.

Exactly the contract's input: 8 axial slices rendered by seer.imaging.views (448 x 448 RGB, in slice order), the system
prompt and user text of seer.reasoning.prompts, the skill-bank block when skills were retrieved, and the request (after
hygiene) inside <raw_prompt> as data. Generation as in the reference: greedy, max_new_tokens=256, use_cache.

The model loads once per process. Generation runs on one worker thread that takes requests from a queue; with
`batch_size` > 1 it batches the requests waiting at that moment into one `generate` call (left padding).
Identical (image content, request, skill ids, model) hit a bounded cache; the cache empties when the skill bank
changes (its version is part of every request).

Speed options (QwenVLSettings), each returning the plain path's tokens for a greedy request:
- `merge_adapter`: a LoRA adapter on the language model only is merged into the weights at load (peft's
  merge_and_unload), so no adapter matmuls run per token; an adapter touching the vision tower stays unmerged.
- `vision_cache`: the views' vision encodings are kept per view (seer.reasoning.reasoners.vision_cache), so a second
  request on a study skips the vision tower.
- `stop_at_answer`: generation stops once "</answer>" is written (transformers' stop strings); the answer is the
  same, the tokens after it are not generated.
- `kv_cache` static and `compile`: a key/value cache of fixed length, and the decoding step compiled with
  torch.compile (transformers compiles it when the cache is static and compilation is allowed).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from seer.cache import BoundedCache
from seer.errors import BadRequest, SeerError
from seer.reasoning.prompts import build_messages
from seer.reasoning.reasoners.base import ReasoningInput
from seer.reasoning.trace import Trace, parse_output

logger = logging.getLogger(__name__)

DEFAULT_BASE = "Qwen/Qwen3-VL-4B-Instruct"
DEFAULT_ADAPTER = "Ztrura/SEER"


class ReasonerUnavailable(SeerError):
    """The configured model or endpoint cannot be used right now (HTTP 503)."""

    status = 503


@dataclass(frozen=True)
class QwenVLSettings:
    model: str = DEFAULT_BASE  # local folder or hub id of the base (or of full v1.0 / merged weights)
    adapter: str | None = DEFAULT_ADAPTER  # LoRA adapter folder or hub id (v1.1); None for full weights
    processor: str | None = None  # defaults to the base
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, float32 on CPU) | bfloat16 | float16 | float32
    max_new_tokens: int = 256
    batch_size: int = 1
    batch_wait_s: float = 0.01
    cache_size: int = 512
    kv_cache: str = "dynamic"  # dynamic | static (a cache of fixed length, allocated per generate call)
    compile: bool = False  # torch.compile the decoding step (with the static cache)
    merge_adapter: bool = True  # merge a LoRA that touches only the language model into the weights at load
    vision_cache: int = 64  # views whose vision encoding is kept (0: off)
    stop_at_answer: bool = True  # stop once "</answer>" is generated


def weights_available(model: str | None, adapter: str | None) -> tuple[bool, str]:
    """Whether base (and adapter) are on this machine: a folder, or a complete entry in the local hub cache."""
    for what, ref, marker in (("base model", model, "config.json"), ("adapter", adapter, "adapter_config.json")):
        if not ref:
            if what == "base model":
                return False, "no base model is configured"
            continue
        if Path(ref).is_dir():
            if not (Path(ref) / marker).exists():
                return False, f"the {what} folder {ref} has no {marker}"
            continue
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False, "huggingface_hub is not installed"
        found = try_to_load_from_cache(ref, marker)
        if not isinstance(found, str):
            return False, f"the {what} {ref} is not in the local hub cache (run `python main.py download-weights`)"
    return True, f"weights found locally ({model}{' + ' + adapter if adapter else ''})"


def _select_device(device: str):
    from seer.devices import select_device

    return select_device(device, "device")


def _select_dtype(dtype: str, device):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "float32": torch.float32, "fp32": torch.float32}
    if dtype not in table:
        raise BadRequest(f"Unknown dtype '{dtype}'; use auto, bfloat16, float16 or float32.")
    return table[dtype]


def _attention_implementation(device) -> str:
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def chat_prompt(processor, messages: list[dict]) -> str:
    """The exact text the processor's chat template renders, generation prompt included (before the image
    placeholders are expanded). Serving and fine-tuning both build their prompt here, so they cannot drift."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class QwenVLEngine:
    """Model + processor + the generation worker. Shared by the reasoner and the test endpoint server."""

    def __init__(self, settings: QwenVLSettings, loaded: tuple | None = None):
        """loaded: (a Qwen3-VL model, with or without a peft adapter, and its processor) already in memory (the
        benchmarks' random models) instead of loading `settings.model` and `settings.adapter`."""
        import torch
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        self.settings = settings
        self.device = _select_device(settings.device)
        self.dtype = _select_dtype(settings.dtype, self.device)
        started = time.perf_counter()
        if loaded is not None:
            model, self.processor = loaded
        else:
            try:
                model = Qwen3VLForConditionalGeneration.from_pretrained(
                    settings.model, dtype=self.dtype, attn_implementation=_attention_implementation(self.device)
                )
                if settings.adapter:
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, settings.adapter)
                self.processor = AutoProcessor.from_pretrained(settings.processor or settings.model)
            except (OSError, ValueError) as exc:
                raise ReasonerUnavailable(
                    f"The SEER model could not be loaded from '{settings.model}'"
                    f"{' + ' + settings.adapter if settings.adapter else ''}: {str(exc).splitlines()[0][:200]}"
                ) from None
        self.merged = False
        if hasattr(model, "merge_and_unload") and settings.merge_adapter and language_model_only(model):
            model = model.merge_and_unload()
            self.merged = True
        self.model = model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        self.vision = None
        if settings.vision_cache > 0:
            from seer.reasoning.reasoners.vision_cache import CachedVisionEncoder

            inner = _inner_model(self.model)
            self.vision = CachedVisionEncoder(inner.visual, settings.vision_cache)
            inner.visual = self.vision
        self.generate_kwargs = generation_options(settings, self.processor.tokenizer, self.device)
        self.model_id = hashlib.sha1(f"{settings.model}|{settings.adapter}|{self.dtype}".encode()).hexdigest()[:12]
        self.load_s = time.perf_counter() - started
        self._torch = torch
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="seer-generate", daemon=True)
        self._worker.start()
        logger.info("loaded %s%s on %s (%s, %s attention) in %.1f s; %s cache%s%s%s", settings.model,
                    (" + " + settings.adapter + (" (merged)" if self.merged else "")) if settings.adapter else "",
                    self.device, self.dtype, _attention_implementation(self.device), self.load_s, settings.kv_cache,
                    ", compiled" if settings.compile else "",
                    f", vision encodings of {settings.vision_cache} views kept" if self.vision else "",
                    ", stops at </answer>" if settings.stop_at_answer else "")

    # -- prompt ------------------------------------------------------------------------------------------------
    def render(self, messages: list[dict]) -> str:
        return chat_prompt(self.processor, messages)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, messages: list[dict], images: list, max_new_tokens: int | None = None) -> tuple[str, dict]:
        """Queue one request and wait for its text; returns (text, timings in seconds)."""
        future: Future = Future()
        self._queue.put((messages, images, max_new_tokens or self.settings.max_new_tokens, future))
        return future.result()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self.settings.batch_wait_s
            while len(batch) < self.settings.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            groups: dict[int, list] = {}
            for item in batch:  # one generate call per max_new_tokens value
                groups.setdefault(item[2], []).append(item)
            for max_new, items in groups.items():
                try:
                    results = self._generate_batch([i[0] for i in items], [i[1] for i in items], max_new)
                    for item, result in zip(items, results, strict=True):
                        item[3].set_result(result)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    for item in items:
                        item[3].set_exception(exc)

    def _generate_batch(self, messages_list, images_list, max_new_tokens) -> list[tuple[str, dict]]:
        torch = self._torch
        t0 = time.perf_counter()
        texts = [self.render(m) for m in messages_list]
        images = [im for ims in images_list for im in ims]
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if self.vision is not None:
            from seer.reasoning.reasoners.vision_cache import image_key

            self.vision.expect([image_key(image) for image in images] if images else None)
        t1 = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                         **self.generate_kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        t3 = time.perf_counter()
        timings = {"preprocess_s": t1 - t0, "generate_s": t2 - t1, "decode_s": t3 - t2, "batch": len(texts),
                   "new_tokens": int(new_tokens.shape[1])}
        return [(text, dict(timings)) for text in decoded]


def language_model_only(peft_model) -> bool:
    """Whether every LoRA layer of a peft model sits in the language model (none in the vision tower)."""
    names = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    return bool(names) and not any(".visual." in f".{name}." for name in names)


def _inner_model(model):
    """The Qwen3VLModel inside a Qwen3-VL model (plain, or under an unmerged peft wrapper)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.model


def generation_options(settings: QwenVLSettings, tokenizer, device) -> dict:
    """The `generate` keyword arguments of the speed options: the cache kind, compilation, the stop string."""
    options: dict = {}
    if settings.kv_cache == "static":
        options["cache_implementation"] = "static"
    if settings.compile:
        from transformers import CompileConfig

        if device.type == "cuda":  # transformers' default: CUDA graphs over the compiled step
            options["compile_config"] = CompileConfig()
        else:  # elsewhere transformers compiles only when told to, and without CUDA graphs
            config = CompileConfig(mode="default")
            config._compile_all_devices = True
            options["compile_config"] = config
    else:
        options["disable_compile"] = True
    if settings.stop_at_answer:
        options["stop_strings"] = ["</answer>"]
        options["tokenizer"] = tokenizer
    return options


class TraceCache(BoundedCache):
    """The `size` most recent traces of identical (image, request, skills, model); emptied when the skill bank
    version changes."""

    def __init__(self, size: int):
        super().__init__("trace", max_items=size)
        self._bank_version: str | None = None

    def lookup(self, key: str, bank_version: str) -> Trace | None:
        with self._lock:
            if bank_version != self._bank_version:
                self._items.clear()
                self._bank_version = bank_version
        return self.get(key)


class QwenVLReasoner:
    name = "qwen-vl"
    needs_images = True

    def __init__(self, settings: QwenVLSettings | None = None, engine: QwenVLEngine | None = None):
        self.settings = settings or QwenVLSettings()
        self.engine = engine or QwenVLEngine(self.settings)
        self.cache = TraceCache(self.settings.cache_size)

    def cache_key(self, inputs: ReasoningInput) -> str:
        parts = [inputs.study_key or "no-image", inputs.request.text, ",".join(s.skill_id for s in inputs.skills),
                 self.engine.model_id]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()

    def messages(self, inputs: ReasoningInput) -> tuple[list[dict], list]:
        if inputs.views is None:
            raise BadRequest("The qwen-vl reasoner needs the image: give --image (CLI) or an image id (server).")
        images = inputs.views.images()
        return build_messages(images, inputs.request.text, inputs.skills), images

    def reason(self, inputs: ReasoningInput) -> Trace:
        started = time.perf_counter()
        key = self.cache_key(inputs)
        cached = self.cache.lookup(key, inputs.bank_version)
        if cached is not None:
            return replace(cached, timings={"cache_hit": True, "total_s": time.perf_counter() - started})
        t0 = time.perf_counter()
        messages, images = self.messages(inputs)
        render_s = time.perf_counter() - t0
        text, timings = self.engine.generate(messages, images)
        t1 = time.perf_counter()
        trace = parse_output(text, inputs.request.text)
        trace.skill_ids = [s.skill_id for s in inputs.skills]
        trace.reasoner = self.name
        trace.timings = {"cache_hit": False, "slices_s": render_s, **timings, "parse_s": time.perf_counter() - t1,
                         "total_s": time.perf_counter() - started}
        if not trace.format_valid:
            logger.warning("model output is not in the SEER format (answer from %s): %r", trace.answer_source,
                           text[:200])
        self.cache.put(key, trace)
        return replace(trace)


def merge_adapter(model: str, adapter: str, output: str, dtype: str = "auto") -> Path:
    """Write base + adapter merged into full weights (for vLLM or faster local inference), with the processor."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    torch_dtype = torch.bfloat16 if dtype in ("auto", "bfloat16", "bf16") else _select_dtype(dtype, torch.device("cpu"))
    base = Qwen3VLForConditionalGeneration.from_pretrained(model, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(model).save_pretrained(out)
    return out
