"""Per-datastore study state for active learning: which studies are labelled, their SEER-Trace scores, who holds
which study (leases) and how many rewards each earned. SQLite at `<datastore>/.seer/state.db` by default, or any
PostgreSQL server (`--conf state_db postgresql://user:pass@host/db`) that several app servers share.

SQLAlchemy Core with the same SQL text for both: it brings a thread-safe connection pool, one parameter style, and
the dialect quirks (SQLite's BEGIN IMMEDIATE, WAL) are set once in `open_engine`. Every statement here is
standard SQL that both engines run (`INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING`).

A hand-out is one transaction: pick candidates, then take a lease with a conditional upsert that only succeeds
when nobody holds an unexpired lease on the study. Two requests (threads or servers) can never take the same
study: the loser's upsert returns no row and it moves to the next candidate.

A lease belongs to its holder: the user narrowed by the client's `client_id` (`lease_holder`), stored in the
leases' `client_id` column. Only the holder, or an admin, ends it (`release` says why not otherwise).

Every method fetches what it reads inside its transaction and returns plain values: a live result handed back
after the connection went back to the pool would be read while another thread uses that connection (SQLite:
"Cannot operate on a closed database", or "database is locked" when the stale read blocks the next BEGIN).
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from seer.errors import BadRequest
from seer.state_db.database import Database, state_url

logger = logging.getLogger(__name__)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS seer_studies (
        study TEXT PRIMARY KEY,
        labelled INTEGER NOT NULL DEFAULT 0,
        image_stamp TEXT,
        priority DOUBLE PRECISION,
        request TEXT,
        in_view INTEGER,
        rewards INTEGER NOT NULL DEFAULT 0,
        shuffle DOUBLE PRECISION NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS seer_studies_pick ON seer_studies (labelled, priority)",
    "CREATE INDEX IF NOT EXISTS seer_studies_unscored ON seer_studies (labelled, in_view, shuffle) "
    "WHERE priority IS NULL",
    """CREATE TABLE IF NOT EXISTS seer_scores (
        study TEXT NOT NULL,
        request TEXT NOT NULL,
        skill_round INTEGER NOT NULL,
        reasoning_stamp TEXT NOT NULL,
        backbone_stamp TEXT,
        image_stamp TEXT NOT NULL,
        disagreement DOUBLE PRECISION NOT NULL,
        skill_gap DOUBLE PRECISION NOT NULL,
        out_of_view DOUBLE PRECISION,
        uncertainty DOUBLE PRECISION,
        score DOUBLE PRECISION NOT NULL,
        details TEXT NOT NULL,
        scored_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (study, request)
    )""",
    """CREATE TABLE IF NOT EXISTS seer_leases (
        study TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        granted_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
    # who saved a final read of a study (a `lease_holder` key): with reads_per_study N, a study counts as labelled
    # once N distinct holders read it, and is never handed to one of them again
    """CREATE TABLE IF NOT EXISTS seer_study_readers (
        study TEXT NOT NULL,
        holder TEXT NOT NULL,
        read_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (study, holder)
    )""",
]

CANDIDATES = 16  # candidates tried per hand-out before giving up on a tier (others may be taking them meanwhile)


@dataclass(frozen=True)
class ScoreRow:
    """One (study, campaign request) score: parts in [0, 1]; `score` = the study's priority from this request."""

    study: str
    request: str
    skill_round: int
    reasoning_stamp: str
    backbone_stamp: str | None
    image_stamp: str
    disagreement: float
    skill_gap: float
    out_of_view: float | None
    uncertainty: float | None
    score: float
    details: dict

    def parts(self) -> dict:
        return {"disagreement": self.disagreement, "skill_gap": self.skill_gap, "out_of_view": self.out_of_view,
                "uncertainty": self.uncertainty}


@dataclass(frozen=True)
class HandOut:
    """A study handed to `holder` until `expires_at` (epoch seconds). selection: "score" (best-scored),
    "foreground-aware random" (unscored, campaign targets in view), "random" (nothing known yet). given_back: the
    studies whose leases the holder gave back in the same transaction (one lease per client)."""

    study: str
    holder: str
    expires_at: float
    selection: str
    priority: float | None
    request: str | None
    in_view: bool | None  # the evidence's or the scores' verdict; None = not known yet
    given_back: tuple[str, ...] = ()


class Release(StrEnum):
    """What `StudyState.release` did: the lease ended, or why not."""

    RELEASED = "released"
    NO_LEASE = "no_lease"  # the study exists and nobody holds an unexpired lease on it
    NO_STUDY = "no_study"  # the state database does not know the study
    NOT_HOLDER = "not_holder"  # another holder's lease: nothing changed
    NEEDS_CLIENT_ID = "needs_client_id"  # the asker's own user holds it, under a client_id the asker did not name


def lease_holder(user: str | None, client_id: str | None = None) -> str:
    """The key a lease is held under: `user`, or `user/client_id` when a client narrows it. A '/' (or '%') in the
    user name is escaped, so that no user and client_id can spell another user's key."""
    user = (user or "anonymous").replace("%", "%25").replace("/", "%2F")
    return f"{user}/{client_id}" if client_id else user


CLIENT_ID = re.compile(r"[A-Za-z0-9._@:+-]{1,128}")


def checked_client_id(client_id) -> str | None:
    """`client_id` as given (None when absent or empty); BadRequest (422) unless it is 1-128 letters, digits or
    . _ @ : + - (a name, an e-mail address or a UUID): never SQL, a path or control characters."""
    if client_id is None or client_id == "":
        return None
    if not isinstance(client_id, str | int) or isinstance(client_id, bool) or not CLIENT_ID.fullmatch(str(client_id)):
        shown = repr(client_id)[:40] + ("..." if len(repr(client_id)) > 40 else "")
        raise BadRequest(f"client_id {shown} is not a client id: use 1-128 letters, digits or . _ @ : + - (a name, "
                         "an e-mail address or a UUID).")
    return str(client_id)


def split_holder(holder: str) -> tuple[str, str | None]:
    """(user key, client_id or None) of a `lease_holder` key."""
    user, _, client = holder.partition("/")
    return user, client or None


class StudyState(Database):
    """The state database of one datastore (see module docstring). All methods are thread-safe."""

    def __init__(self, url: str, reads_per_study: int = 1):
        """reads_per_study: distinct annotators whose final reads make a study labelled (the setting)."""
        self.reads_per_study = max(1, int(reads_per_study))
        # Hand-outs of this process take turns here: threads then queue on a lock instead of on SQLite's busy
        # handler, whose back-off sleeps (up to 100 ms a try) made p95 seconds long with 20 clients. Other
        # processes still meet at the database (SQLite's write lock, PostgreSQL's row locks).
        self._hand_out_lock = threading.Lock()
        super().__init__(url, SCHEMA)

    @classmethod
    def for_datastore(cls, url: str | None, state_dir: Path, reads_per_study: int = 1) -> StudyState:
        """`url` (from the `state_db` setting) or SQLite at `<state_dir>/state.db`."""
        return cls(state_url(url, state_dir), reads_per_study)

    # -- studies -----------------------------------------------------------------------------------------------
    def sync_studies(self, studies: dict[str, str], labelled: Iterable[str]) -> dict:
        """Make the table match the datastore: `studies` maps every study id to its image stamp; `labelled` lists
        those with a final label (with reads_per_study N > 1, only those read by N annotators count). Returns counts:
        added, removed, labelled (newly), restamped."""
        labelled = set(labelled)
        now = time.time()
        with self.engine.begin() as conn:
            if self.reads_per_study > 1:
                read_enough = {r.study for r in conn.execute(self.text(
                    "SELECT study FROM seer_study_readers GROUP BY study HAVING COUNT(*) >= :n"),
                    {"n": self.reads_per_study})}
                labelled &= read_enough
            known = {r.study: (r.labelled, r.image_stamp) for r in conn.execute(
                self.text("SELECT study, labelled, image_stamp FROM seer_studies"))}
            added = [
                {"study": s, "labelled": int(s in labelled), "stamp": stamp, "now": now, "shuffle": random.random()}
                for s, stamp in studies.items() if s not in known
            ]
            if added:
                conn.execute(self.text(
                    "INSERT INTO seer_studies (study, labelled, image_stamp, shuffle, updated_at) "
                    "VALUES (:study, :labelled, :stamp, :shuffle, :now) ON CONFLICT (study) DO NOTHING"), added)
            removed = [{"study": s} for s in known if s not in studies]
            if removed:
                conn.execute(self.text("DELETE FROM seer_studies WHERE study = :study"), removed)
                conn.execute(self.text("DELETE FROM seer_scores WHERE study = :study"), removed)
                conn.execute(self.text("DELETE FROM seer_leases WHERE study = :study"), removed)
            flips = [
                {"study": s, "labelled": int(s in labelled), "now": now}
                for s, (was, _) in known.items() if s in studies and bool(was) != (s in labelled)
            ]
            if flips:
                conn.execute(self.text(
                    "UPDATE seer_studies SET labelled = :labelled, updated_at = :now WHERE study = :study"), flips)
                conn.execute(self.text(
                    "DELETE FROM seer_leases WHERE study = :study AND :labelled = 1"), flips)
            restamped = [
                {"study": s, "stamp": studies[s], "now": now}
                for s, (_, stamp) in known.items() if s in studies and stamp != studies[s]
            ]
            if restamped:
                conn.execute(self.text(
                    "UPDATE seer_studies SET image_stamp = :stamp, priority = NULL, request = NULL, in_view = NULL, "
                    "updated_at = :now WHERE study = :study"), restamped)
        return {"added": len(added), "removed": len(removed), "labelled": sum(f["labelled"] for f in flips),
                "restamped": len(restamped)}

    def mark_labelled(self, study: str, labelled: bool = True) -> None:
        """A final label was saved (or deleted): the study leaves (or rejoins) the pool; its lease ends."""
        with self.engine.begin() as conn:
            conn.execute(self.text(
                "INSERT INTO seer_studies (study, labelled, shuffle, updated_at) VALUES (:study, :labelled, :shuffle, "
                ":now) ON CONFLICT (study) DO UPDATE SET labelled = :labelled, updated_at = :now"),
                {"study": study, "labelled": int(labelled), "now": time.time(), "shuffle": random.random()})
            if labelled:
                conn.execute(self.text("DELETE FROM seer_leases WHERE study = :study"), {"study": study})

    def record_reader(self, study: str, holder: str) -> bool:
        """`holder` saved a final read of `study`: with reads_per_study N, the study is labelled (and its lease
        ends) once N distinct holders read it; before that only the holder's own lease ends and the study goes back
        to the pool for the next reader. A read counts once saved final, whatever a reviewer decides later. One
        transaction; whether the study is labelled now."""
        now = time.time()
        with self.engine.begin() as conn:
            # the study's row first: two readers saving at once take turns here, so the second counts the first
            conn.execute(self.text(
                "INSERT INTO seer_studies (study, labelled, shuffle, updated_at) VALUES (:study, 0, :shuffle, :now) "
                "ON CONFLICT (study) DO UPDATE SET updated_at = :now"),
                {"study": study, "now": now, "shuffle": random.random()})
            conn.execute(self.text(
                "INSERT INTO seer_study_readers (study, holder, read_at) VALUES (:study, :holder, :now) "
                "ON CONFLICT (study, holder) DO NOTHING"), {"study": study, "holder": holder, "now": now})
            readers = conn.execute(self.text("SELECT COUNT(*) FROM seer_study_readers WHERE study = :study"),
                                   {"study": study}).scalar()
            labelled = readers >= self.reads_per_study
            conn.execute(self.text(
                "INSERT INTO seer_studies (study, labelled, shuffle, updated_at) VALUES (:study, :labelled, :shuffle, "
                ":now) ON CONFLICT (study) DO UPDATE SET labelled = :labelled, updated_at = :now"),
                {"study": study, "labelled": int(labelled), "now": now, "shuffle": random.random()})
            if labelled:
                conn.execute(self.text("DELETE FROM seer_leases WHERE study = :study"), {"study": study})
            else:
                conn.execute(self.text("DELETE FROM seer_leases WHERE study = :study AND client_id = :holder"),
                             {"study": study, "holder": holder})
        return labelled

    def readers(self, study: str) -> list[str]:
        """The holders who saved a final read of `study`, first first."""
        return [r["holder"] for r in self.rows(
            "SELECT holder FROM seer_study_readers WHERE study = :study ORDER BY read_at", {"study": study})]

    def unlabelled(self) -> dict[str, str | None]:
        """Unlabelled study -> image stamp."""
        rows = self.rows("SELECT study, image_stamp FROM seer_studies WHERE labelled = 0")
        return {r["study"]: r["image_stamp"] for r in rows}

    def unchecked(self) -> set[str]:
        """Unlabelled studies with neither a score nor an in-view flag yet."""
        rows = self.rows("SELECT study FROM seer_studies WHERE labelled = 0 AND priority IS NULL AND in_view IS NULL")
        return {r["study"] for r in rows}

    def set_in_view(self, flags: dict[str, bool]) -> None:
        """The cheap evidence pass: whether each study's evidence puts the campaign's targets in view."""
        if flags:
            self.execute("UPDATE seer_studies SET in_view = :in_view WHERE study = :study",
                      [{"study": s, "in_view": int(v)} for s, v in flags.items()])

    def set_reward_counts(self, counts: dict[str, int]) -> None:
        """study -> rewards earned (from the trace log's reward rows); only changed counts are written."""
        if counts:
            self.execute("UPDATE seer_studies SET rewards = :count WHERE study = :study AND rewards <> :count",
                      [{"study": s, "count": n} for s, n in counts.items()])

    def study(self, study: str) -> dict | None:
        return self.row("SELECT * FROM seer_studies WHERE study = :study", {"study": study})

    def counts(self) -> dict:
        return {k: int(v) for k, v in self.row(
            "SELECT COUNT(*) AS studies, "
            "COALESCE(SUM(CASE WHEN labelled = 1 THEN 1 ELSE 0 END), 0) AS labelled, "
            "COALESCE(SUM(CASE WHEN labelled = 0 AND priority IS NOT NULL THEN 1 ELSE 0 END), 0) AS scored, "
            "COALESCE(SUM(CASE WHEN labelled = 0 AND in_view = 0 THEN 1 ELSE 0 END), 0) AS out_of_view, "
            "COALESCE(SUM(rewards), 0) AS rewards, "
            "(SELECT COUNT(*) FROM seer_leases WHERE expires_at > :now) AS leased FROM seer_studies",
            {"now": time.time()}).items()}

    # -- scores ------------------------------------------------------------------------------------------------
    def scores(self, study: str) -> list[ScoreRow]:
        rows = self.rows("SELECT * FROM seer_scores WHERE study = :study ORDER BY request", {"study": study})
        return [_score_row(r) for r in rows]

    def all_scores(self) -> dict[tuple[str, str], ScoreRow]:
        return {(r["study"], r["request"]): _score_row(r) for r in self.rows("SELECT * FROM seer_scores")}

    def save_scores(self, study: str, rows: list[ScoreRow], priority: float, request: str | None,
                    in_view: bool | None) -> None:
        """Replace a study's score rows and set its priority (the best request's score) in one transaction."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(self.text("DELETE FROM seer_scores WHERE study = :study"), {"study": study})
            if rows:
                conn.execute(self.text(
                    "INSERT INTO seer_scores (study, request, skill_round, reasoning_stamp, backbone_stamp, "
                    "image_stamp, disagreement, skill_gap, out_of_view, uncertainty, score, details, scored_at) "
                    "VALUES (:study, :request, :skill_round, :reasoning_stamp, :backbone_stamp, :image_stamp, "
                    ":disagreement, :skill_gap, :out_of_view, :uncertainty, :score, :details, :now)"),
                    [{**r.__dict__, "details": json.dumps(r.details, sort_keys=True), "now": now} for r in rows])
            conn.execute(self.text(
                "UPDATE seer_studies SET priority = :priority, request = :request, in_view = :in_view, "
                "updated_at = :now WHERE study = :study"),
                {"study": study, "priority": priority, "request": request,
                 "in_view": None if in_view is None else int(in_view), "now": now})

    # -- leases ------------------------------------------------------------------------------------------------
    def hand_out(self, holder: str, lease_s: float, now: float | None = None,
                 one_per_client: bool = False) -> HandOut | None:
        """The best unlabelled study nobody holds, leased to `holder` (a `lease_holder` key) for `lease_s` seconds;
        None when every unlabelled study is labelled or held. Tiers: best score, then random among in-view unscored
        studies, then random among the rest. one_per_client: the holder's earlier leases end in the same
        transaction (a skipped study goes back to the pool), and a study given back is handed to it again only when
        nothing else is free."""
        now = time.time() if now is None else now
        with self._hand_out_lock:
            return self._hand_out(holder, lease_s, now, one_per_client)

    def _tiers(self, skip: bool) -> list[tuple[str, object, bool]]:
        from sqlalchemy import bindparam

        free = "s.labelled = 0 AND NOT EXISTS (SELECT 1 FROM seer_leases l WHERE l.study = s.study AND " \
               "l.expires_at > :now)" + (" AND s.study NOT IN :skip" if skip else "")
        if self.reads_per_study > 1:  # never a study the holder has read
            free += " AND NOT EXISTS (SELECT 1 FROM seer_study_readers r WHERE r.study = s.study AND r.holder = :holder)"
        pick = "SELECT s.study, s.priority, s.request, s.in_view FROM seer_studies s WHERE " + free
        # Random tiers walk the studies' random keys (`shuffle`, drawn once per study) from a random pivot, through
        # an index: no full scan per call (ORDER BY random() took 10 ms at 10,000 studies).
        tiers = [
            ("score", f"{pick} AND s.priority IS NOT NULL ORDER BY s.priority DESC, s.study LIMIT {CANDIDATES}"),
            ("foreground-aware random", f"{pick} AND s.priority IS NULL AND s.in_view = 1 AND s.shuffle >= :pivot "
                                        f"ORDER BY s.shuffle LIMIT {CANDIDATES}"),
            ("random", f"{pick} AND s.priority IS NULL AND s.in_view IS NULL AND s.shuffle >= :pivot "
                       f"ORDER BY s.shuffle LIMIT {CANDIDATES}"),
            ("random", f"{pick} AND s.priority IS NULL AND s.in_view = 0 AND s.shuffle >= :pivot "
                       f"ORDER BY s.shuffle LIMIT {CANDIDATES}"),
        ]
        out = []
        for selection, sql in tiers:
            statement = self.text(sql)
            if skip:
                statement = statement.bindparams(bindparam("skip", expanding=True))
            out.append((selection, statement, ":pivot" in sql))
        return out

    def _hand_out(self, holder, lease_s, now, one_per_client) -> HandOut | None:
        """One transaction: give back the holder's leases (one_per_client), then the tiers in order, each from a
        random pivot and then from the start; the studies given back only when nothing else is free."""
        take = self.text(
            "INSERT INTO seer_leases (study, client_id, granted_at, expires_at) VALUES (:study, :client, :now, "
            ":expires) ON CONFLICT (study) DO UPDATE SET client_id = :client, granted_at = :now, expires_at = :expires "
            "WHERE seer_leases.expires_at <= :now RETURNING study")
        with self.engine.begin() as conn:
            given_back: tuple[str, ...] = ()
            if one_per_client:
                given_back = tuple(sorted(row.study for row in conn.execute(self.text(
                    "DELETE FROM seer_leases WHERE client_id = :client RETURNING study"), {"client": holder})))
            passes = [True, False] if given_back else [False]
            for skip in passes:
                for selection, statement, pivoted in self._tiers(skip):
                    pivots = [random.random(), 0.0] if pivoted else [0.0]
                    params = {"now": now, "holder": holder, **({"skip": list(given_back)} if skip else {})}
                    for pivot in pivots:
                        for _attempt in range(4):  # candidates taken by another server meanwhile: look again
                            candidates = conn.execute(statement, {**params, "pivot": pivot}).fetchall()
                            if not candidates:
                                break
                            for row in candidates:
                                got = conn.execute(take, {"study": row.study, "client": holder, "now": now,
                                                          "expires": now + lease_s}).first()
                                if got is not None:
                                    return HandOut(row.study, holder, now + lease_s, selection,
                                                   None if row.priority is None else float(row.priority), row.request,
                                                   None if row.in_view is None else bool(row.in_view), given_back)
        return None

    def release(self, study: str, holder: str, admin: bool = False, now: float | None = None) -> Release:
        """End `holder`'s lease on `study` (any holder's when `admin`). Another holder's lease is left as it is:
        NOT_HOLDER, or NEEDS_CLIENT_ID when it is held by the asker's own user under a client_id the asker did not
        name. One transaction."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            lease = conn.execute(self.text(
                "SELECT client_id FROM seer_leases WHERE study = :study AND expires_at > :now"),
                {"study": study, "now": now}).first()
            if lease is None:
                known = conn.execute(self.text("SELECT 1 FROM seer_studies WHERE study = :study"),
                                     {"study": study}).first()
                return Release.NO_LEASE if known else Release.NO_STUDY
            held = lease.client_id
            if held != holder and not admin:
                (user, client), (held_user, held_client) = split_holder(holder), split_holder(held)
                if client is None and held_client is not None and held_user == user:
                    return Release.NEEDS_CLIENT_ID
                return Release.NOT_HOLDER
            ended = conn.execute(self.text("DELETE FROM seer_leases WHERE study = :study AND client_id = :held"),
                                 {"study": study, "held": held}).rowcount
        return Release.RELEASED if ended else Release.NO_LEASE

    def lease(self, study: str, now: float | None = None) -> dict | None:
        return self.row("SELECT * FROM seer_leases WHERE study = :study AND expires_at > :now",
                         {"study": study, "now": time.time() if now is None else now})


def _score_row(r) -> ScoreRow:
    return ScoreRow(
        study=r["study"], request=r["request"], skill_round=int(r["skill_round"]),
        reasoning_stamp=r["reasoning_stamp"], backbone_stamp=r["backbone_stamp"], image_stamp=r["image_stamp"],
        disagreement=float(r["disagreement"]), skill_gap=float(r["skill_gap"]),
        out_of_view=None if r["out_of_view"] is None else float(r["out_of_view"]),
        uncertainty=None if r["uncertainty"] is None else float(r["uncertainty"]),
        score=float(r["score"]), details=json.loads(r["details"]),
    )
