"""The durable trace log: every SEER trace and what the annotation loop adds to it (rewards, skips), as JSONL
written with append + fsync under a file lock, rotated into gzip archives that readers follow.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from seer.files import write_atomic

logger = logging.getLogger(__name__)


def is_proposal(row: dict) -> bool:
    """A trace row whose request produced a mask (a proposal that a saved label can reward)."""
    return (row.get("type", "trace") == "trace" and bool(row.get("proposal")) and not row.get("refused")
            and bool(row.get("target")))


class TraceLog:
    """Append-only JSONL of SEER-Trace rows. Each append is one write + fsync under a file lock, so a crash
    leaves every earlier row readable (a torn last line is skipped by readers, and the next append starts on a
    new line). Rows carry a `type`: "trace" (one request; rows written before types existed have none) or what
    the annotation loop adds ("reward", "reward_skipped").

    Rotation: when the live file passes `max_mb`, its rows go to a gzip archive beside it
    (`traces.jsonl.<UTC time>.gz`, kept) and the live file is replaced by the rows rewards still need: the trace
    rows of proposals without a reward yet, and their skip rows. Readers that follow the log (`read_since`) notice
    the replacement by the file's identity and read the new archive first, so no row is missed or read twice."""

    def __init__(self, path: str | os.PathLike, max_mb: float = 64.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.path) + ".lock")
        self.max_bytes = int(max_mb * 2**20)
        self._rotate_at = self.max_bytes  # raised when a rotation would keep too much, so it is not retried per row

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
                size += len(line)
            finally:
                os.close(fd)
            if size > max(self.max_bytes, self._rotate_at):
                self._rotate(size)
        return row

    def archives(self) -> list[Path]:
        """The rotated-out parts of the log, oldest first."""
        return sorted(self.path.parent.glob(self.path.name + ".*.gz"))

    @staticmethod
    def read_archive(path: str | os.PathLike) -> list[dict]:
        with gzip.open(path, "rb") as fp:
            return _parse_lines(fp.read())

    def read_all(self) -> list[dict]:
        """Every row ever logged: the archives, then the live file."""
        rows = [row for archive in self.archives() for row in self.read_archive(archive)]
        return rows + self.read_from(0)[0]

    def _rotate(self, size: int) -> None:
        """Archive the live file and keep only what pending rewards need (caller holds the lock)."""
        with open(self.path, "rb") as fp:
            data = fp.read()
        rows = _parse_lines(data)
        rewarded = {str(r.get("trace_id")) for r in rows if r.get("type") == "reward"}
        pending = {str(r.get("id")) for r in rows if is_proposal(r) and str(r.get("id")) not in rewarded}
        keep = [r for r in rows if (r.get("type", "trace") == "trace" and str(r.get("id")) in pending)
                or (r.get("type") == "reward_skipped" and str(r.get("trace_id")) in pending)]
        kept = b"".join((json.dumps(r, ensure_ascii=False, default=str) + "\n").encode("utf-8") for r in keep)
        if len(kept) > self.max_bytes // 2:
            logger.warning("trace log %s not rotated: %d proposals still wait for a reward (%.0f MB)", self.path,
                           len(pending), len(kept) / 2**20)
            self._rotate_at = size + self.max_bytes // 2
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"
        archive = self.path.with_name(f"{self.path.name}.{stamp}.gz")
        tmp = archive.with_name(archive.name + ".tmp")
        with gzip.open(tmp, "wb", compresslevel=6) as fp:
            fp.write(data[: data.rfind(b"\n") + 1])
        os.replace(tmp, archive)
        write_atomic(self.path, kept)
        logger.info("trace log rotated: %d rows to %s, %d rows kept for pending rewards", len(rows), archive.name,
                    len(keep))

    def read(self) -> Iterator[dict]:
        rows, _ = self.read_from(0)
        yield from rows

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        """Rows in complete lines after byte `offset` of the live file, and the offset after the last complete
        line (a line still being written is left for the next call)."""
        rows, position, _ = self.read_since((None, offset))
        return rows, position[1]

    def read_since(self, position: tuple | None) -> tuple[list[dict], tuple, bool]:
        """Follow the log: rows after `position` ((file identity, offset), None = the start), the new position,
        and whether the live file was rotated since `position` (its identity changed: the caller reads the
        archives it has not seen, then these rows, which start from the new file's beginning)."""
        identity, offset = position or (None, 0)
        try:
            with open(self.path, "rb") as fp:
                stat = os.fstat(fp.fileno())
                now = (stat.st_dev, stat.st_ino)
                rotated = identity is not None and now != identity
                if rotated:
                    offset = 0
                fp.seek(offset)
                data = fp.read()
        except FileNotFoundError:
            return [], (identity, offset), False
        end = data.rfind(b"\n") + 1
        return _parse_lines(data[:end]), (now, offset + end), rotated


def _parse_lines(data: bytes) -> list[dict]:
    rows = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn line
        if isinstance(row, dict):
            rows.append(row)
    return rows
