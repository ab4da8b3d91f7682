"""SEER traces: the model's evidence / rationale / answer, parsed exactly as the contract says (the durable log of
traces is `seer.loop.trace_log`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_FORMAT = re.compile(
    r"^\s*<evidence>.*?</evidence>\s*<rationale>.*?</rationale>\s*<answer>.*?</answer>\s*$",
    re.IGNORECASE | re.DOTALL,
)
_PART = {
    name: re.compile(rf"<{name}>(.*?)</{name}>", re.IGNORECASE | re.DOTALL)
    for name in ("evidence", "rationale", "answer")
}
_TAG = re.compile(r"<[^>]+>")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


@dataclass
class Trace:
    """One reasoning step. `format_valid` is the contract's whole-text check; `answer_source` says where the
    answer came from: "answer" (tag), "stripped_text" or "raw_request" (the contract's fallbacks)."""

    evidence: str
    rationale: str
    answer: str
    raw_text: str
    format_valid: bool
    answer_source: str = "answer"
    skill_ids: list[str] = field(default_factory=list)
    reasoner: str = ""
    # this request's reasoner timings (seconds, cache_hit): carried by the trace, not the shared reasoner, so that
    # concurrent requests never read each other's
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def has_valid_format(text: str) -> bool:
    return bool(_FORMAT.match(_clean(text)))


def parse_output(text: str, raw_request: str) -> Trace:
    """Parse model output. Answer fallbacks per the contract: the <answer> content; else the whole text with tags
    stripped; when that is empty, the raw request."""
    cleaned = _clean(text)
    parts = {name: _clean(m.group(1)) if (m := rx.search(cleaned)) else "" for name, rx in _PART.items()}
    if _PART["answer"].search(cleaned):
        answer, source = parts["answer"], "answer"
    else:
        answer, source = _clean(_TAG.sub(" ", cleaned)), "stripped_text"
    if not answer:
        answer, source = _clean(raw_request), "raw_request"
    return Trace(
        evidence=parts["evidence"],
        rationale=parts["rationale"],
        answer=answer,
        raw_text=text,
        format_valid=has_valid_format(text),
        answer_source=source,
    )


def render_output(evidence: str, rationale: str, answer: str) -> str:
    """The contract's output format, as a reasoner that writes its own text produces it."""
    return f"<evidence>{evidence}</evidence>\n<rationale>{rationale}</rationale>\n<answer>{answer}</answer>"
