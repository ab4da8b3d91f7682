"""SEER traces: the model's evidence / rationale / answer, parsed exactly as the contract says, and the durable
trace log (JSONL, append + fsync under a file lock).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

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


class TraceLog:
    """Append-only JSONL of SEER-Trace rows. Each append is one write + fsync under a file lock, so a crash
    leaves every earlier row readable (a torn last line is skipped by `read`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")

    def append(self, row: dict) -> dict:
        row = {"ts": round(time.time(), 3), **row}
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return row

    def read(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fp:
            for line in fp:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
