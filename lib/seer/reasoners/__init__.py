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


class Reasoner(Protocol):
    name: str
    needs_images: bool

    def reason(self, inputs: ReasoningInput) -> Trace: ...


def resolve_choice(choice: str) -> tuple[str, str]:
    """Map 'auto' onto a concrete reasoner; returns (name, why)."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return "offline", "auto: no VLM weights are configured, so the offline reasoner is used"
    if choice not in REASONERS:
        raise BadRequest(f"Unknown reasoner '{choice}'; choose one of {', '.join(CHOICES)}.")
    return choice, f"{choice}: chosen explicitly"


def make_reasoner(name: str, **options) -> Reasoner:
    module_name, class_name = REASONERS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)
