"""Each annotator's read of a study and its review state, in the study-state database (SQLite at
`<datastore>/.seer/state.db`, or the `state_db` PostgreSQL that several servers share).

    draft      a non-final save
    submitted  a final save, waiting for a reviewer (setting `review` on)
    approved   a reviewer approved it; with `review` off, every final save is approved on save
    rejected   a reviewer sent it back, with a comment; the annotator's next final save submits it again

An annotator is the authenticated user narrowed by the save's `client_id` (with auth off: `anonymous/<client_id>`),
the same key leases are held under. Only a study whose label holds an approved read teaches: rewards, skill rounds
and atlases.

Every final read keeps its own mask (`seer_read_masks`, the file's bytes), so several reads of one study live side by
side and any server can show, compare or promote one. The datastore's final label holds one of them
(`seer_final_labels` says which): the newest approved read, else the newest submitted one. A final save becomes the
datastore's label unless another annotator's approved read holds it; an approval makes the approved read the
label. Agreement between two reads (`seer.review.agreement`) is kept per annotator pair (`seer_read_agreement`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from seer.errors import BadRequest, Conflict, Forbidden, StudyNotFound
from seer.review.study_lock import StudyLocks
from seer.state_db.database import Database, state_url

logger = logging.getLogger(__name__)

MAX_KEPT_BYTES = 256 * 2**20  # a read's file larger than this (an uncompressed float label) is not kept


def _schema(dialect: str) -> list[str]:
    binary = "BYTEA" if dialect == "postgresql" else "BLOB"
    return [*SCHEMA, f"""CREATE TABLE IF NOT EXISTS seer_read_masks (
        study TEXT NOT NULL,
        annotator TEXT NOT NULL,
        submitted_at DOUBLE PRECISION NOT NULL,
        file_name TEXT NOT NULL,
        label_info TEXT NOT NULL,
        mask {binary} NOT NULL,
        PRIMARY KEY (study, annotator)
    )"""]


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS seer_label_reads (
        study TEXT NOT NULL,
        annotator TEXT NOT NULL,
        state TEXT NOT NULL,
        label_tag TEXT NOT NULL,
        saved_at DOUBLE PRECISION NOT NULL,
        submitted_at DOUBLE PRECISION,
        decided_at DOUBLE PRECISION,
        reviewer TEXT,
        comment TEXT,
        PRIMARY KEY (study, annotator)
    )""",
    "CREATE INDEX IF NOT EXISTS seer_label_reads_state ON seer_label_reads (state, submitted_at)",
    # the read the datastore's final label holds
    """CREATE TABLE IF NOT EXISTS seer_final_labels (
        study TEXT PRIMARY KEY,
        annotator TEXT NOT NULL,
        submitted_at DOUBLE PRECISION NOT NULL
    )""",
    # agreement of two final reads (first < second by annotator key), computed when either is saved
    """CREATE TABLE IF NOT EXISTS seer_read_agreement (
        study TEXT NOT NULL,
        first TEXT NOT NULL,
        second TEXT NOT NULL,
        computed_at DOUBLE PRECISION NOT NULL,
        min_dice DOUBLE PRECISION,
        figures TEXT NOT NULL,
        PRIMARY KEY (study, first, second)
    )""",
]


class ReadState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


DECISIONS = {"approve": ReadState.APPROVED, "reject": ReadState.REJECTED}


class LabelReads(Database):
    """The reads of one datastore. Thread-safe; every method is one transaction."""

    def __init__(self, url: str):
        super().__init__(url, _schema)
        self.locks = StudyLocks(self.engine if self.dialect == "postgresql" else None)

    def study_lock(self, study: str):
        """A context in which no other change to `study`'s final label runs, on this server or another one sharing
        the PostgreSQL (seer.review.study_lock): a save from its check through its recorded read, a decision."""
        return self.locks.hold(study)

    def close(self) -> None:
        self.locks.close()
        super().close()

    @classmethod
    def for_datastore(cls, url: str | None, state_dir: Path) -> LabelReads:
        """`url` (the `state_db` setting) or SQLite at `<state_dir>/state.db`, beside the study state."""
        return cls(state_url(url, state_dir))

    # -- saves -------------------------------------------------------------------------------------------------------
    def saved(self, study: str, annotator: str, tag: str, final: bool, approve: bool) -> dict:
        """Record a save: a final save submits the read (approves it when `approve`, i.e. review is off); a draft
        save makes a read a draft unless it was already submitted or approved (a draft never undoes those)."""
        now = time.time()
        if final:
            state = ReadState.APPROVED if approve else ReadState.SUBMITTED
            sql = ("INSERT INTO seer_label_reads (study, annotator, state, label_tag, saved_at, submitted_at, "
                   "decided_at, reviewer, comment) VALUES (:study, :annotator, :state, :tag, :now, :now, :decided, "
                   ":reviewer, NULL) ON CONFLICT (study, annotator) DO UPDATE SET state = :state, label_tag = :tag, "
                   "saved_at = :now, submitted_at = :now, decided_at = :decided, reviewer = :reviewer, comment = NULL")
            params = {"state": state.value, "decided": now if approve else None,
                      "reviewer": "approved on save (review off)" if approve else None}
        else:
            sql = ("INSERT INTO seer_label_reads (study, annotator, state, label_tag, saved_at) VALUES (:study, "
                   ":annotator, 'draft', :tag, :now) ON CONFLICT (study, annotator) DO UPDATE SET saved_at = :now, "
                   "state = CASE WHEN seer_label_reads.state IN ('submitted', 'approved') THEN seer_label_reads.state "
                   "ELSE 'draft' END, label_tag = CASE WHEN seer_label_reads.state IN ('submitted', 'approved') "
                   "THEN seer_label_reads.label_tag ELSE :tag END")
            params = {}
        with self.engine.begin() as conn:
            conn.execute(self.text(sql), {"study": study, "annotator": annotator, "tag": tag, "now": now, **params})
        return self.read(study, annotator)

    def keep_mask(self, study: str, annotator: str, path: str | Path, label_info: dict) -> bool:
        """Keep a final read's label file (its bytes, as saved) and label info beside its review state; False (and a
        warning) for a file over MAX_KEPT_BYTES, which is then neither compared nor written back."""
        read = self.read(study, annotator)
        if read is None or read["submitted_at"] is None:
            raise StudyNotFound(f"'{annotator}' has no final label on '{study}' to keep.")
        size = Path(path).stat().st_size
        if size > MAX_KEPT_BYTES:
            logger.warning("the read of %s on %s is %d MB: its file is not kept in the state database (at most %d "
                           "MB; save it compressed)", annotator, study, size >> 20, MAX_KEPT_BYTES >> 20)
            return False
        data = Path(path).read_bytes()
        info = json.dumps({k: v for k, v in (label_info or {}).items() if k != "client_id"}, default=str)
        with self.engine.begin() as conn:
            conn.execute(self.text(
                "INSERT INTO seer_read_masks (study, annotator, submitted_at, file_name, label_info, mask) VALUES "
                "(:study, :annotator, :submitted, :name, :info, :mask) ON CONFLICT (study, annotator) DO UPDATE SET "
                "submitted_at = :submitted, file_name = :name, label_info = :info, mask = :mask"),
                {"study": study, "annotator": annotator, "submitted": read["submitted_at"],
                 "name": Path(path).name, "info": info, "mask": data})
        return True

    @contextlib.contextmanager
    def mask_file(self, study: str, annotator: str) -> Iterator[tuple[Path, dict] | None]:
        """(a temporary copy of the read's label file, its label info), or None when no mask is kept for it."""
        row = self.row("SELECT file_name, label_info, mask FROM seer_read_masks WHERE study = :study AND "
                        "annotator = :annotator", {"study": study, "annotator": annotator})
        if row is None:
            yield None
            return
        folder = tempfile.mkdtemp(prefix="seer-read-")
        path = Path(folder) / ("read" + _suffix(row["file_name"]))
        try:
            path.write_bytes(bytes(row["mask"]))
            yield path, json.loads(row["label_info"])
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    def kept_info(self, study: str) -> dict[str, dict]:
        """annotator -> the label info kept with that annotator's final read of `study` (provenance included)."""
        return {r["annotator"]: json.loads(r["label_info"]) for r in self.rows(
            "SELECT annotator, label_info FROM seer_read_masks WHERE study = :study", {"study": study})}

    def with_masks(self, study: str) -> list[str]:
        """Annotators whose final read of `study` has its mask kept."""
        return [r["annotator"] for r in self.rows(
            "SELECT annotator FROM seer_read_masks WHERE study = :study ORDER BY annotator", {"study": study})]

    # -- the datastore's final label -------------------------------------------------------------------------------
    def takes_label(self, study: str, annotator: str, approve: bool) -> bool:
        """Whether a final save by `annotator` becomes the datastore's final label: yes when it is approved on save
        (review off), else unless another annotator's approved read holds the label."""
        if approve:
            return True
        return self.value("SELECT COUNT(*) FROM seer_label_reads WHERE study = :study AND annotator <> :annotator "
                          "AND state = 'approved'", {"study": study, "annotator": annotator}) == 0

    def label_read(self, study: str) -> dict | None:
        """The read the datastore's final label should hold: the newest approved read, else the newest submitted."""
        rows = self.rows("SELECT * FROM seer_label_reads WHERE study = :study AND state IN ('approved', 'submitted') "
                          "ORDER BY CASE WHEN state = 'approved' THEN 0 ELSE 1 END, "
                          "COALESCE(decided_at, submitted_at) DESC LIMIT 1", {"study": study})
        return rows[0] if rows else None

    def holder(self, study: str) -> dict | None:
        """The read the datastore's final label holds ({annotator, submitted_at, state, ...}), or None."""
        return self.row("SELECT f.annotator, f.submitted_at AS held_at, r.state, r.submitted_at FROM seer_final_labels f "
                        "LEFT JOIN seer_label_reads r ON r.study = f.study AND r.annotator = f.annotator WHERE "
                        "f.study = :study", {"study": study})

    def set_holder(self, study: str, annotator: str) -> None:
        """Record that the datastore's final label of `study` now holds `annotator`'s read."""
        read = self.read(study, annotator)
        self.execute("INSERT INTO seer_final_labels (study, annotator, submitted_at) VALUES (:study, :annotator, "
                     ":submitted) ON CONFLICT (study) DO UPDATE SET annotator = :annotator, submitted_at = :submitted",
                     {"study": study, "annotator": annotator,
                      "submitted": (read or {}).get("submitted_at") or time.time()})

    # -- review --------------------------------------------------------------------------------------------------------
    def decide(self, study: str, annotator: str, decision: str, reviewer: str, comment: str = "",
               own: bool = False, allow_own: bool = False) -> dict:
        """A reviewer's decision on a final read. BadRequest (422) for a decision other than approve / reject or a
        rejection without a comment, StudyNotFound (404) when the annotator has no read of the study, Conflict
        (409) for a draft, Forbidden (403) when the read is the reviewer's `own` unless `allow_own`. An approved
        read may be rejected: the caller withdraws what it taught (`was` says it was approved)."""
        state = DECISIONS.get(str(decision).strip().lower()) if isinstance(decision, str) else None
        if state is None:
            raise BadRequest(f"decision {str(decision)[:40]!r} is not a decision: send \"approve\" or \"reject\".")
        comment = str(comment or "").strip()[:2000]
        if state is ReadState.REJECTED and not comment:
            raise BadRequest("A rejection needs a comment saying what to change (\"comment\": \"...\").")
        current = self.read(study, annotator)
        if current is None:
            known = ", ".join(r["annotator"] for r in self.reads(study)) or "none"
            raise StudyNotFound(f"'{annotator}' has no label on '{study}' (annotators with one: {known}).")
        if own and not allow_own:
            raise Forbidden(f"'{reviewer}' cannot review their own label (setting review_self allows it).")
        if current["state"] == ReadState.DRAFT:
            raise Conflict(f"The label of '{annotator}' on '{study}' is a draft: it can be reviewed once it is "
                           "saved as final.")
        now = time.time()
        with self.engine.begin() as conn:  # only the read the reviewer saw: not one saved or decided meanwhile
            changed = conn.execute(self.text(
                "UPDATE seer_label_reads SET state = :state, decided_at = :now, reviewer = :reviewer, "
                "comment = :comment WHERE study = :study AND annotator = :annotator AND state = :was AND "
                "submitted_at = :submitted"),
                {"state": state.value, "now": now, "reviewer": reviewer, "comment": comment or None,
                 "study": study, "annotator": annotator, "was": current["state"],
                 "submitted": current["submitted_at"]}).rowcount
        if not changed:
            raise Conflict(f"The label of '{annotator}' on '{study}' changed while it was reviewed (saved again or "
                           "decided by another reviewer): look at it again.")
        return {**self.read(study, annotator), "was": current["state"]}

    # -- agreement -----------------------------------------------------------------------------------------------------
    def save_agreement(self, study: str, first: str, second: str, figures: dict) -> None:
        first, second = sorted((first, second))
        self.execute("INSERT INTO seer_read_agreement (study, first, second, computed_at, min_dice, figures) VALUES "
                     "(:study, :first, :second, :now, :min_dice, :figures) ON CONFLICT (study, first, second) DO "
                     "UPDATE SET computed_at = :now, min_dice = :min_dice, figures = :figures",
                     {"study": study, "first": first, "second": second, "now": time.time(),
                      "min_dice": figures.get("min_dice"), "figures": json.dumps(figures)})

    def agreement(self, study: str | None = None) -> list[dict]:
        """Agreement of each pair of final reads (of `study`, or of every study) whose both reads are still
        submitted or approved: {study, first, second, computed_at, min_dice, mean_dice, structures}."""
        where = "a.study = :study AND " if study is not None else ""
        rows = self.rows(
            "SELECT a.* FROM seer_read_agreement a JOIN seer_label_reads r1 ON r1.study = a.study AND r1.annotator = "
            "a.first JOIN seer_label_reads r2 ON r2.study = a.study AND r2.annotator = a.second WHERE " + where +
            "r1.state IN ('submitted', 'approved') AND r2.state IN ('submitted', 'approved') ORDER BY a.study, "
            "a.first, a.second", {"study": study} if study is not None else {})
        out = []
        for row in rows:
            figures = json.loads(row.pop("figures"))
            out.append({**row, "mean_dice": figures.get("mean_dice"), "structures": figures.get("structures", {})})
        return out

    # -- reading -------------------------------------------------------------------------------------------------------
    def read(self, study: str, annotator: str) -> dict | None:
        rows = self.rows("SELECT * FROM seer_label_reads WHERE study = :study AND annotator = :annotator",
                          {"study": study, "annotator": annotator})
        return rows[0] if rows else None

    def reads(self, study: str) -> list[dict]:
        return self.rows("SELECT * FROM seer_label_reads WHERE study = :study ORDER BY saved_at", {"study": study})

    def final_reads(self, study: str) -> list[dict]:
        """The study's submitted and approved reads."""
        return self.rows("SELECT * FROM seer_label_reads WHERE study = :study AND state IN ('submitted', 'approved') "
                          "ORDER BY submitted_at", {"study": study})

    def queue(self, limit: int = 1000, min_dice: float | None = None) -> list[dict]:
        """Submitted reads waiting for a reviewer: those in a pair whose agreement falls below `min_dice` first,
        then oldest first. Each carries `agreement` (its pairs) and `disagrees`."""
        waiting = self.rows("SELECT * FROM seer_label_reads WHERE state = 'submitted' ORDER BY submitted_at", {})
        studies = {r["study"] for r in waiting}
        pairs = [p for p in self.agreement() if p["study"] in studies]
        for read in waiting:
            mine = [p for p in pairs if p["study"] == read["study"] and read["annotator"] in (p["first"], p["second"])]
            read["agreement"] = [{k: p[k] for k in ("first", "second", "min_dice", "mean_dice")} for p in mine]
            read["disagrees"] = min_dice is not None and any(
                p["min_dice"] is not None and p["min_dice"] < min_dice for p in mine)
        waiting.sort(key=lambda r: (not r["disagrees"], r["submitted_at"]))
        return waiting[:int(limit)]

    def all_reads(self) -> list[dict]:
        return self.rows("SELECT * FROM seer_label_reads ORDER BY study, saved_at", {})

    def approved(self, study: str) -> bool:
        """Whether the read the study's datastore label holds is approved (before any label was recorded as held:
        whether its newest final read is)."""
        return study in self._approved(study)

    def approved_studies(self) -> set[str]:
        """The studies whose label holds an approved read (see `approved`)."""
        return self._approved(None)

    def _approved(self, study: str | None) -> set[str]:
        one = " AND r.study = :study" if study is not None else ""
        rows = self.rows(
            "SELECT f.study FROM seer_final_labels f JOIN seer_label_reads r ON r.study = f.study AND r.annotator = "
            f"f.annotator WHERE r.state = 'approved'{one} UNION SELECT r.study FROM seer_label_reads r WHERE "
            "r.state = 'approved' AND r.submitted_at = (SELECT MAX(n.submitted_at) FROM seer_label_reads n WHERE "
            "n.study = r.study) AND NOT EXISTS (SELECT 1 FROM seer_final_labels f WHERE f.study = r.study)" + one,
            {"study": study} if study is not None else {})
        return {r["study"] for r in rows}

    def final_readers(self) -> dict[str, int]:
        """study -> how many annotators saved a final read of it (submitted, approved or rejected)."""
        return {r["study"]: int(r["n"]) for r in self.rows(
            "SELECT study, COUNT(*) AS n FROM seer_label_reads WHERE submitted_at IS NOT NULL GROUP BY study")}


def _suffix(name: str) -> str:
    """".nii.gz" for "label.nii.gz": the suffixes a label reader needs."""
    suffixes = Path(name).suffixes
    return "".join(suffixes[-2:]) if suffixes[-1:] == [".gz"] else "".join(suffixes[-1:])
