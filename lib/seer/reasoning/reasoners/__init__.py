"""Reasoners turn (image, raw request, skills) into a SEER trace. One file per reasoner; register it here.

Protocol: `name`, `needs_images` (whether it reads the 8 rendered slices), `reason(ReasoningInput) -> Trace`.
Heavy imports happen inside the reasoner's module, which is imported only when selected.
"""

from __future__ import annotations

import importlib

from seer.errors import BadRequest
from seer.reasoning.reasoners.base import Reasoner, ReasoningInput
from seer.settings import REASONER_CHOICES

__all__ = ["CHOICES", "REASONERS", "Reasoner", "ReasoningInput", "make_reasoner", "resolve_choice"]

REASONERS = {
    "offline": "seer.reasoning.reasoners.offline:OfflineReasoner",
    "qwen-vl": "seer.reasoning.reasoners.qwen_vl:QwenVLReasoner",
    "openai": "seer.reasoning.reasoners.openai_compat:OpenAIReasoner",
}
CHOICES = REASONER_CHOICES  # "auto" and the names above (declared in seer.settings, which validates them)


def resolve_choice(choice: str, settings=None) -> tuple[str, str]:
    """Map 'auto' onto a concrete reasoner; returns (name, why). `settings`: SeerSettings (model, adapter)."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        if settings is None:
            return "offline", "auto: no VLM weights are configured, so the offline reasoner is used"
        from seer.reasoning.reasoners.qwen_vl import weights_available

        found, why = weights_available(settings.model, settings.adapter or None)
        if found:
            return "qwen-vl", f"auto: {why}, so the qwen-vl reasoner is used"
        return "offline", f"auto: {why}; the offline reasoner is used"
    if choice not in REASONERS:
        raise BadRequest(f"Unknown reasoner '{choice}'; choose one of {', '.join(CHOICES)}.")
    return choice, f"{choice}: chosen explicitly"


def make_reasoner(name: str, settings=None) -> Reasoner:
    """Build a reasoner; `settings` (SeerSettings) carries the model / endpoint options."""
    module_name, class_name = REASONERS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if name == "qwen-vl":
        from seer.reasoning.reasoners.qwen_vl import QwenVLSettings

        s = settings
        return cls(QwenVLSettings(
            model=s.model, adapter=s.adapter or None, processor=s.processor or None, device=s.device, dtype=s.dtype,
            max_new_tokens=s.max_new_tokens, batch_size=s.reasoner_batch, cache_size=s.reasoner_cache,
            kv_cache=s.kv_cache, compile=s.reasoner_compile, merge_adapter=s.merge_adapter,
            vision_cache=s.vision_cache, stop_at_answer=s.stop_at_answer,
        ) if s else None)
    if name == "openai":
        from seer.reasoning.reasoners.openai_compat import EndpointSettings

        s = settings
        if s is None:
            raise BadRequest("The openai reasoner needs an endpoint URL: --conf endpoint http://host:port/v1.")
        return cls(EndpointSettings(url=s.endpoint, model=s.endpoint_model, timeout_s=s.endpoint_timeout,
                                    max_new_tokens=s.max_new_tokens, cache_size=s.reasoner_cache))
    return cls()
