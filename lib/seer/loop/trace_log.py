"""The durable trace log: every SEER trace and what the annotation loop adds to it (rewards, skips), as JSONL
written with append + fsync under a file lock, rotated into gzip archives that readers follow.

Two ways to read it: the reward ledger follows every row in log order (`read_since`, then `archives`); everything
else that looks back at requests (GET /seer/trace, the SEG's content description, active learning's campaign and
phrasings) reads `TraceLog.history`: the trace rows, newest first, archives included, reading only as far back as
the caller goes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from filelock import FileLock

from seer.files import append_durably, write_atomic

logger = logging.getLogger(__name__)


def is_proposal(row: dict) -> bool:
    """A trace row whose request produced a mask (a proposal that a saved label can reward)."""
    return (row.get("type", "trace") == "trace" and bool(row.get("proposal")) and not row.get("refused")
            and bool(row.get("target")))


@contextlib.contextmanager
def local_proposal_file(row: dict) -> Iterator[str | None]:
    """The proposal file a trace row names, when it exists on this machine (else None)."""
    path = str(row.get("proposal") or "")
    yield path if path and os.path.isfile(path) else None


def _in_history(row: dict) -> bool:
    """A trace row in its own place in the log (not a copy a rotation carried into the next live file)."""
    return row.get("type", "trace") == "trace" and not row.get("carried")


_BLOCK = 1 << 16  # bytes read at a time when the live file is read from its end


class TraceLog:
    """Append-only JSONL of SEER-Trace rows. Each append is one write + fsync under a file lock, so a crash
    leaves every earlier row readable (a torn last line is skipped by readers, and the next append starts on a
    new line). Rows carry a `type`: "trace" (one request; rows written before types existed have none) or what
    the annotation loop adds ("reward", "reward_skipped").

    Rotation: when the live file passes `max_mb`, its rows go to a gzip archive beside it
    (`traces.jsonl.<UTC time>.gz`, kept) and the live file is replaced by the rows rewards still need: the trace
    rows of proposals without a reward yet, and their skip rows. Readers that follow the log (`read_since`) notice
    the replacement by the file's identity and read the new archive first, so no row is missed or read twice.
    Carried-over rows are marked `carried: true`: `history` reads each trace at its first place."""

    def __init__(self, path: str | os.PathLike, max_mb: float = 64.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.path) + ".lock")
        self.max_bytes = int(max_mb * 2**20)
        self._rotate_at = self.max_bytes  # raised when a rotation would keep too much, so it is not retried per row
        self._index_lock = threading.Lock()
        self._archive_studies: dict[str, Counter] = {}  # archive name -> trace rows per study (archives never change)
        self._live_studies: Counter = Counter()  # the same for the live file, read on incrementally
        self._live_position: tuple = (None, 0)

    def append(self, row: dict) -> dict:
        row = {"ts": round(time.time(), 3), **row}
        line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self.lock:
            size = append_durably(self.path, line)
            if size > max(self.max_bytes, self._rotate_at):
                self._rotate(size)
        return row

    @staticmethod
    def proposal_file(row: dict):
        """The proposal file of trace `row` where this machine has it (a context manager yielding a path or None)."""
        return local_proposal_file(row)

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
        keep = [{**r, "carried": True} for r in rows
                if (r.get("type", "trace") == "trace" and str(r.get("id")) in pending)
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

    # -- history: the trace rows, newest first ----------------------------------------------------------------------
    def stamp(self) -> tuple:
        """Changes whenever the log does: the live file's identity, size and mtime, and the archives' names."""
        try:
            stat = os.stat(self.path)
            live = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            live = None
        return live, tuple(a.name for a in self.archives())

    def history(self, study: str | None = None, limit: int | None = None) -> Iterator[dict]:
        """Every trace row ever logged (of `study` when given), newest first: the live file read from its end, then
        the archives, newest first. A row a rotation carried over is read once, at its place in the archive.

        Reads only as far back as the caller goes: stopping the iteration (or `limit` rows) stops the reading. The
        live file is read from its end in blocks; an archive is streamed keeping only the rows still wanted (at most
        `limit`), and one whose index says it holds none of `study`'s traces is not opened again."""
        if limit is not None and limit <= 0:
            return
        seen: set[str] = set()  # a race with a rotation (or a log from before `carried`) may show a row twice
        for row in chain(self._live_newest_first(study), self._archives_newest_first(study, limit)):
            row_id = str(row.get("id"))
            if row_id in seen:
                continue
            seen.add(row_id)
            yield row
            if limit is not None and len(seen) >= limit:
                return

    def _archives_newest_first(self, study: str | None, limit: int | None) -> Iterator[dict]:
        """The archives' trace rows (of `study`), newest first; an archive is opened only when the caller reads on."""
        for archive in reversed(self.archives()):
            counts = self._archive_studies.get(archive.name)
            if counts is not None and (not counts if study is None else study not in counts):
                continue  # indexed: holds no trace (of `study`)
            # at most `limit` rows of this archive can still be returned, even where some were seen already
            yield from reversed(self._archive_rows(archive, study, limit))

    def count(self, study: str) -> int:
        """How many trace rows on `study` the whole log holds, archives included, from a per-file index (the live
        file is read on from where the last count stopped; each archive is read once)."""
        with self._index_lock:
            self._follow_live()
            total = self._live_studies.get(study, 0)
        archives = self.archives()
        names = {a.name for a in archives}
        for name in [n for n in self._archive_studies if n not in names]:
            self._archive_studies.pop(name, None)  # an archive someone removed
        for archive in archives:
            counts = self._archive_studies.get(archive.name)
            if counts is None:
                self._archive_rows(archive, study, 0)
                counts = self._archive_studies.get(archive.name, Counter())
            total += counts.get(study, 0)
        return total

    def _live_newest_first(self, study: str | None) -> Iterator[dict]:
        try:
            with open(self.path, "rb") as fp:
                for line in _lines_from_end(fp, os.fstat(fp.fileno()).st_size):
                    row = _parse_line(line)
                    if row is not None and _in_history(row) and (study is None or row.get("study") == study):
                        yield row
        except FileNotFoundError:
            return

    def _archive_rows(self, archive: Path, study: str | None, keep: int | None) -> list[dict]:
        """The newest `keep` (None: all) trace rows of `study` (None: any) in an archive, oldest first; indexes the
        archive's studies on the way."""
        counts: Counter = Counter()
        rows: deque = deque(maxlen=keep)
        try:
            with gzip.open(archive, "rb") as fp:
                for line in fp:
                    row = _parse_line(line)
                    if row is None or not _in_history(row):
                        continue
                    counts[row.get("study")] += 1
                    if study is None or row.get("study") == study:
                        rows.append(row)
        except FileNotFoundError:
            return []
        except (OSError, EOFError) as exc:  # a damaged archive: what it held up to the damage
            logger.warning("trace log archive %s is damaged (%s); read up to the damage", archive, exc)
            return list(rows)
        self._archive_studies[archive.name] = counts
        return list(rows)

    def _follow_live(self) -> None:
        """Count the live file's trace rows per study from where the last call stopped (caller holds _index_lock);
        after a rotation (a new file) the count starts again."""
        identity, offset = self._live_position
        try:
            with open(self.path, "rb") as fp:
                stat = os.fstat(fp.fileno())
                now = (stat.st_dev, stat.st_ino)
                if now != identity or stat.st_size < offset:
                    self._live_studies = Counter()
                    offset = 0
                fp.seek(offset)
                for line in fp:
                    if not line.endswith(b"\n"):
                        break  # a line still being written: counted next time
                    offset += len(line)
                    row = _parse_line(line)
                    if row is not None and _in_history(row):
                        self._live_studies[row.get("study")] += 1
        except FileNotFoundError:
            return
        self._live_position = (now, offset)

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


def _parse_line(line: bytes) -> dict | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a torn line
    return row if isinstance(row, dict) else None


def _parse_lines(data: bytes) -> list[dict]:
    return [row for row in map(_parse_line, data.splitlines()) if row is not None]


def _lines_from_end(fp, size: int, block: int = _BLOCK) -> Iterator[bytes]:
    """The complete lines of the first `size` bytes of `fp`, last first, reading `block` bytes at a time (what
    follows the last newline is a line still being written, and is skipped)."""
    position, carry, complete = size, b"", False
    while position > 0:
        start = max(0, position - block)
        fp.seek(start)
        data = fp.read(position - start) + carry
        position = start
        if not complete:
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = b""  # all of it belongs to the unfinished last line
                continue
            data, complete = data[: cut + 1], True
        parts = data.split(b"\n")
        carry = parts[0] if start > 0 else b""
        for line in reversed(parts if start == 0 else parts[1:]):
            if line.strip():
                yield line
