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


class TraceLog:
    """Append-only JSONL of SEER-Trace rows. Each append is one write + fsync under a file lock, so a crash
    leaves every earlier row readable (a torn last line is skipped by readers, and the next append starts on a
    new line). Rows carry a `type`: "trace" (one request; rows written before types existed have none) or what
    the annotation loop adds ("reward", "reward_skipped")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.path) + ".lock")

    def append(self, row: dict) -> dict:
        row = {"ts": round(time.time(), 3), **row}
        line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self.lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # the previous writer died mid-line: keep its fragment apart
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return row

    def read(self) -> Iterator[dict]:
        rows, _ = self.read_from(0)
        yield from rows

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        """Rows in complete lines after byte `offset`, and the offset after the last complete line (a line still
        being written is left for the next call)."""
        try:
            with open(self.path, "rb") as fp:
                fp.seek(offset)
                data = fp.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        rows = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows, offset + end
