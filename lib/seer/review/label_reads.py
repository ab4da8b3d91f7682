"""Each annotator's read of a study and its review state, in the study-state database (SQLite at
`<datastore>/.seer/state.db`, or the `state_db` PostgreSQL that several servers share).

    draft      a non-final save
    submitted  a final save, waiting for a reviewer (setting `review` on)
    approved   a reviewer approved it; with `review` off, every final save is approved on save
    rejected   a reviewer sent it back, with a comment; the annotator's next final save submits it again

An annotator is the authenticated user narrowed by the save's `client_id` (with auth off: `anonymous/<client_id>`),
the same key leases are held under. Only a study with an approved read teaches: rewards, skill rounds and atlases.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

from seer.errors import BadRequest, Conflict, Forbidden, StudyNotFound
from seer.state_db.database import Database, state_url

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
        super().__init__(url, SCHEMA)

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

    # -- review --------------------------------------------------------------------------------------------------------
    def decide(self, study: str, annotator: str, decision: str, reviewer: str, comment: str = "",
               own: bool = False, allow_own: bool = False) -> dict:
        """A reviewer's decision on a submitted read. BadRequest (422) for a decision other than approve / reject
        or a rejection without a comment, StudyNotFound (404) when the annotator has no read of the study,
        Conflict (409) for a draft, Forbidden (403) when the read is the reviewer's `own` unless `allow_own`."""
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
        if current["state"] == ReadState.APPROVED and state is ReadState.REJECTED:
            raise Conflict(f"The label of '{annotator}' on '{study}' is approved and has taught (rewards, atlas): "
                           "it cannot be rejected; save a corrected final label, which is reviewed again.")
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

    # -- reading -------------------------------------------------------------------------------------------------------
    def read(self, study: str, annotator: str) -> dict | None:
        rows = self.rows("SELECT * FROM seer_label_reads WHERE study = :study AND annotator = :annotator",
                          {"study": study, "annotator": annotator})
        return rows[0] if rows else None

    def reads(self, study: str) -> list[dict]:
        return self.rows("SELECT * FROM seer_label_reads WHERE study = :study ORDER BY saved_at", {"study": study})

    def newest_submitted(self, study: str) -> dict | None:
        """The study's newest submitted read (the one its datastore's final label holds), or None."""
        rows = self.rows("SELECT * FROM seer_label_reads WHERE study = :study AND state = 'submitted' ORDER BY "
                          "submitted_at DESC LIMIT 1", {"study": study})
        return rows[0] if rows else None

    def queue(self, limit: int = 1000) -> list[dict]:
        """Submitted reads waiting for a reviewer, oldest first."""
        return self.rows(f"SELECT * FROM seer_label_reads WHERE state = 'submitted' ORDER BY submitted_at "
                          f"LIMIT {int(limit)}", {})

    def all_reads(self) -> list[dict]:
        return self.rows("SELECT * FROM seer_label_reads ORDER BY study, saved_at", {})

    def approved(self, study: str) -> bool:
        """Whether the study's newest final read (the one its datastore's final label holds) is approved: an
        approval of an earlier read does not cover a later final save, nor does a rejected newest read teach."""
        rows = self.rows("SELECT state FROM seer_label_reads WHERE study = :study AND submitted_at IS NOT NULL "
                          "ORDER BY submitted_at DESC LIMIT 1", {"study": study})
        return bool(rows) and rows[0]["state"] == ReadState.APPROVED

    def approved_studies(self) -> set[str]:
        """The studies whose newest final read is approved (see `approved`)."""
        rows = self.rows("SELECT r.study FROM seer_label_reads r WHERE r.state = 'approved' AND r.submitted_at = "
                          "(SELECT MAX(n.submitted_at) FROM seer_label_reads n WHERE n.study = r.study)", {})
        return {r["study"] for r in rows}
