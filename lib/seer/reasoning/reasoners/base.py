"""What every reasoner takes and gives: `ReasoningInput` in, a SEER `Trace` out (the `Reasoner` protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from seer.imaging.evidence import ImageEvidence
from seer.imaging.views import SliceViews
from seer.reasoning.hygiene import CleanRequest
from seer.reasoning.parser import Parser
from seer.reasoning.skills import Skill
from seer.reasoning.trace import Trace


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
