"""Reasoners turn (image, raw request, skills) into a SEER trace. One file per reasoner; register it here.

Protocol: `name`, `needs_images` (whether it reads the 8 rendered slices), `reason(ReasoningInput) -> Trace`.
Heavy imports happen inside the reasoner's module, which is imported only when selected.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import BadRequest
from ..evidence import ImageEvidence
from ..hygiene import CleanRequest
from ..lexicon import Parser
from ..skills import Skill
from ..trace import Trace
from ..views import SliceViews

REASONERS = {
    "offline": "seer.reasoners.offline:OfflineReasoner",
    "qwen-vl": "seer.reasoners.qwen_vl:QwenVLReasoner",
    "openai": "seer.reasoners.openai_compat:OpenAIReasoner",
}
CHOICES = ("auto", *REASONERS)


@dataclass
class ReasoningInput:
    """request: after hygiene; views/evidence: None when no image was given; parser: the backbone vocabulary's
    parser (a reasoner may use its words for spelling repair, never its label ids)."""

    request: CleanRequest
    views: SliceViews | None = None
    evidence: ImageEvidence | None = None
    skills: list[Skill] = field(default_factory=list)
    parser: Parser | None = None
    study_key: str | None = None  # content hash of the image (cache key)
    bank_version: str = ""  # skill bank version (caches empty when it changes)


class Reasoner(Protocol):
    name: str
    needs_images: bool

    def reason(self, inputs: ReasoningInput) -> Trace: ...


def resolve_choice(choice: str, settings=None) -> tuple[str, str]:
    """Map 'auto' onto a concrete reasoner; returns (name, why). `settings`: SeerSettings (model, adapter)."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        if settings is None:
            return "offline", "auto: no VLM weights are configured, so the offline reasoner is used"
        from .qwen_vl import weights_available

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
        from .qwen_vl import QwenVLSettings

        s = settings
        return cls(QwenVLSettings(
            model=s.model, adapter=s.adapter or None, processor=s.processor or None, device=s.device, dtype=s.dtype,
            max_new_tokens=s.max_new_tokens, batch_size=s.reasoner_batch, cache_size=s.reasoner_cache,
        ) if s else None)
    if name == "openai":
        from .openai_compat import EndpointSettings

        s = settings
        if s is None:
            raise BadRequest("The openai reasoner needs an endpoint URL: --conf endpoint http://host:port/v1.")
        return cls(EndpointSettings(url=s.endpoint, model=s.endpoint_model, timeout_s=s.endpoint_timeout,
                                    max_new_tokens=s.max_new_tokens, cache_size=s.reasoner_cache))
    return cls()
