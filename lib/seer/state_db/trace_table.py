"""The trace log in the shared state database: `DatabaseTraceLog` has `seer.loop.trace_log.TraceLog`'s interface, so
the reward ledger, GET /seer/trace, the SEG's content description and active learning read it unchanged.

Rows keep their log order in `seq`. Appends are serialized across servers (`StateDatabase.serialized`), so rows
commit in `seq` order and a follower (`read_since`) never misses one. A proposal gets at most one reward row: a
unique index decides, so two servers that see the same save record one reward. A proposal's mask file is stored
with its trace row (`seer_proposals`), so a server that never made the proposal can still score it.

While the database cannot be reached, trace rows go to a spool file in the server's state folder (appended with
fsync, as the file log is) and enter the table, in order, with the next append or read that reaches it: a request
is answered and its trace is not lost. Rewards and skips are not spooled: the annotation loop computes them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from seer.errors import StateUnavailable
from seer.files import append_durably, write_atomic
from seer.state_db.database import StateDatabase

logger = logging.getLogger(__name__)

PAGE = 500  # rows read per query when history is read newest first
MAX_PROPOSAL_BYTES = 256 * 2**20  # a proposal file larger than this stays on disk only


class DatabaseTraceLog:
    """Append-only trace rows in `seer_trace_rows` (see module docstring). Thread-safe."""

    def __init__(self, db: StateDatabase, spool: str | os.PathLike | None = None):
        """spool: the file that holds trace rows while the database is down (None: such an append fails)."""
        self.db = db
        self.spool = Path(spool) if spool else None
        self._spool_lock = FileLock(str(spool) + ".lock") if spool else None
        self.path = None  # no live file: nothing rotates, there are no archives
        # the reward ledger holds this while it checks and appends; the unique index is what makes a reward once
        self.lock = threading.RLock()

    # -- writing -------------------------------------------------------------------------------------------------
    def append(self, row: dict) -> dict | None:
        """Append one row (a trace, a reward, a skip) and return it with its `ts`; a trace row's proposal file is
        stored beside it. None when the row was not added: a second reward of one proposal, or a trace id logged
        already. A trace row goes to the spool while the database is down (StateUnavailable for other rows)."""
        row = {"ts": round(time.time(), 3), **row}
        try:
            self.flush_spool()
            return self._insert(row)
        except StateUnavailable:
            if self.spool is None or row.get("type", "trace") != "trace":
                raise
            with self._spool_lock:
                append_durably(self.spool, (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode())
            logger.warning("state database unreachable: trace %s kept in %s until it answers", row.get("id"),
                           self.spool)
            return row

    def flush_spool(self) -> int:
        """Move the spooled trace rows into the table, oldest first (a row already there is not added twice); how
        many were moved. StateUnavailable when the database is still down."""
        if self.spool is None or not _has_rows(self.spool):
            return 0
        with self._spool_lock:
            rows = [row for line in self.spool.read_bytes().splitlines() if (row := _body(line)) is not None]
            for row in rows:
                self._insert(row)
            write_atomic(self.spool, b"")
        logger.info("state database reachable again: %d spooled trace rows stored", len(rows))
        return len(rows)

    def _insert(self, row: dict) -> dict | None:
        kind = str(row.get("type", "trace"))
        mask = _proposal_bytes(row) if kind == "trace" else None
        params = {"kind": kind, "row_id": _text(row.get("id")) if kind == "trace" else None,
                  "trace_id": _text(row.get("trace_id")), "study": _text(row.get("study")), "ts": float(row["ts"]),
                  "body": json.dumps(row, ensure_ascii=False, default=str)}
        conflict = {"trace": " ON CONFLICT (row_id) WHERE kind = 'trace' DO NOTHING",
                    "reward": " ON CONFLICT (trace_id) WHERE kind = 'reward' DO NOTHING"}.get(kind, "")
        with self.db.serialized("trace_rows") as conn:
            added = conn.execute(self.db.text(
                "INSERT INTO seer_trace_rows (kind, row_id, trace_id, study, ts, body) "
                f"VALUES (:kind, :row_id, :trace_id, :study, :ts, :body){conflict} RETURNING seq"), params).first()
            if added is None:
                return None
            if mask is not None:
                conn.execute(self.db.text(
                    "INSERT INTO seer_proposals (trace_id, study, mask, bytes, stored_at) VALUES (:trace_id, :study, "
                    ":mask, :bytes, :now) ON CONFLICT (trace_id) DO NOTHING"),
                    {"trace_id": params["row_id"], "study": params["study"], "mask": mask, "bytes": len(mask),
                     "now": time.time()})
        return row

    def import_rows(self, rows: list[dict]) -> int:
        """Append rows as they are (their own `ts`), in order, skipping traces and rewards the table holds already:
        how many were added. For the migration of a file log."""
        added = 0
        for row in rows:
            if self.append(row) is not None:
                added += 1
        return added

    # -- following the log -----------------------------------------------------------------------------------------
    def read_since(self, position: tuple | None) -> tuple[list[dict], tuple, bool]:
        """Rows after `position` ((None, last seq read), None = the start), the new position, and False (the table
        never rotates)."""
        last = int((position or (None, 0))[1])
        with contextlib.suppress(StateUnavailable):
            self.flush_spool()  # the read below then reports an unreachable database itself
        found = self.db.rows("SELECT seq, body FROM seer_trace_rows WHERE seq > :last ORDER BY seq", {"last": last})
        rows = [_body(r["body"]) for r in found]
        return [r for r in rows if r is not None], (None, int(found[-1]["seq"]) if found else last), False

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        rows, position, _ = self.read_since((None, offset))
        return rows, position[1]

    def read(self) -> Iterator[dict]:
        yield from self.read_since(None)[0]

    def read_all(self) -> list[dict]:
        return self.read_since(None)[0]

    def archives(self) -> list[Path]:
        return []

    @staticmethod
    def read_archive(path) -> list[dict]:
        return []

    # -- history ---------------------------------------------------------------------------------------------------
    def stamp(self) -> tuple:
        """Changes whenever a row is appended."""
        return ("db", self.db.value("SELECT MAX(seq) FROM seer_trace_rows"))

    def history(self, study: str | None = None, limit: int | None = None) -> Iterator[dict]:
        """Trace rows (of `study`), newest first, read a page at a time as far as the caller goes."""
        if limit is not None and limit <= 0:
            return
        where = "kind = 'trace'" + (" AND study = :study" if study is not None else "")
        before, given = None, 0
        while True:
            page = min(PAGE, limit - given) if limit is not None else PAGE
            found = self.db.rows(
                f"SELECT seq, body FROM seer_trace_rows WHERE {where}"
                + (" AND seq < :before" if before is not None else "") + f" ORDER BY seq DESC LIMIT {page}",
                {"study": study, "before": before})
            for item in found:
                row = _body(item["body"])
                if row is not None:
                    yield row
                    given += 1
            if len(found) < page or (limit is not None and given >= limit):
                return
            before = int(found[-1]["seq"])

    def count(self, study: str) -> int:
        return int(self.db.value("SELECT COUNT(*) FROM seer_trace_rows WHERE kind = 'trace' AND study = :study",
                                 {"study": study}) or 0)

    def row_count(self) -> int:
        return int(self.db.value("SELECT COUNT(*) FROM seer_trace_rows") or 0)

    # -- proposals -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def proposal_file(self, row: dict) -> Iterator[str | None]:
        """A readable file of the proposal of trace `row`: its own file where this machine has it, else the mask
        stored with the trace, written to a temporary file for the block; None when neither exists."""
        path = str(row.get("proposal") or "")
        if path and os.path.isfile(path):
            yield path
            return
        found = self.db.rows("SELECT mask FROM seer_proposals WHERE trace_id = :id", {"id": str(row.get("id"))})
        if not found:
            yield None
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="seer-proposal-") as folder:
            target = Path(folder) / "proposal.nii.gz"
            target.write_bytes(bytes(found[0]["mask"]))
            yield str(target)

    def prune_proposals(self, keep: set[str], older_than_s: float, max_bytes: float) -> int:
        """Delete stored proposal masks: those of rewarded proposals (not in `keep`, the trace ids still waiting)
        older than `older_than_s`, then the oldest while they hold more than `max_bytes`. How many went."""
        now = time.time()
        rows = self.db.rows("SELECT trace_id, bytes, stored_at FROM seer_proposals ORDER BY stored_at")
        doomed = [r["trace_id"] for r in rows if r["trace_id"] not in keep and now - r["stored_at"] > older_than_s]
        gone = set(doomed)
        total = sum(int(r["bytes"]) for r in rows if r["trace_id"] not in gone)
        for r in rows:
            if total <= max_bytes:
                break
            if r["trace_id"] not in gone:
                gone.add(r["trace_id"])
                doomed.append(r["trace_id"])
                total -= int(r["bytes"])
        if doomed:
            with self.db.engine.begin() as conn:
                conn.execute(self.db.text("DELETE FROM seer_proposals WHERE trace_id = :id"),
                             [{"id": t} for t in doomed])
        return len(doomed)


def _proposal_bytes(row: dict) -> bytes | None:
    path = row.get("proposal")
    if not path or row.get("refused"):
        return None
    try:
        if os.path.getsize(path) > MAX_PROPOSAL_BYTES:
            logger.warning("proposal %s is over %d MiB: kept on this server's disk only", path,
                           MAX_PROPOSAL_BYTES >> 20)
            return None
        return Path(path).read_bytes()
    except OSError:
        return None


def _has_rows(path: Path) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _text(value) -> str | None:
    return None if value is None else str(value)


def _body(text: str) -> dict | None:
    try:
        row = json.loads(text)
    except (TypeError, ValueError):
        return None
    return row if isinstance(row, dict) else None
