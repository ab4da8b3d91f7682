"""Skill rounds in the shared state database: `DatabaseSkillRounds` has `seer.loop.skill_rounds.SkillRounds`'s
interface, without its file locks. Each round is one row (its bank as JSONL, its report as JSON). A round closes
once for every server: the close is one serialized transaction that inserts the next round's row only when nobody
has, so the database decides, not a file lock; evolution is deterministic, so the bank is the same whichever
server computes it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from seer.errors import BadRequest, StateUnavailable
from seer.files import write_atomic
from seer.reasoning.skills import EvolutionSettings, RewardedTrace, RoundReport, SkillBank, evolve_due
from seer.state_db.database import StateDatabase

logger = logging.getLogger(__name__)

ACTIVE_TTL_S = 1.0  # how long `active()` trusts its round before asking the database again


class DatabaseSkillRounds:
    def __init__(
        self,
        db: StateDatabase,
        state_dir: str | Path | None = None,
        seed: Callable[[], SkillBank] | None = None,
        round_size: int = 20,
        settings: EvolutionSettings | None = None,
        dataset: str = "",
        create: bool = True,
    ):
        """state_dir: where a copy of the newest bank is kept for readers of files (`<state>/skills.jsonl`), and
        where a bank from before rounds existed may be found to seed round 0; None for the CLI."""
        self.db = db
        self.state_dir = Path(state_dir) if state_dir else None
        self.folder = None
        self.latest_path = self.state_dir / "skills.jsonl" if self.state_dir else None
        self.round_size = round_size
        self.settings = settings or EvolutionSettings()
        self.dataset = dataset
        self._mutex = threading.Lock()
        self._active: tuple[int, SkillBank] | None = None
        self._checked = 0.0
        if create:
            self._ensure_seed(seed)
        elif not self.rounds():
            raise BadRequest(f"No skill rounds in the state database {db.shown}: start a server on it first (it "
                             "seeds round 0).")

    # -- reading -------------------------------------------------------------------------------------------------
    def path(self, number: int) -> str:
        return f"{self.db.shown}#round-{number:04d}"

    def rounds(self) -> list[int]:
        return [int(r["round"]) for r in self.db.rows("SELECT round FROM seer_skill_rounds ORDER BY round")]

    def bank(self, number: int) -> SkillBank:
        found = self.db.rows("SELECT bank FROM seer_skill_rounds WHERE round = :n", {"n": number})
        if not found:
            known = self.rounds()
            raise BadRequest(f"There is no skill round {number}; rounds {known[0]}..{known[-1]} exist."
                             if known else f"There is no skill round {number}.")
        bank = SkillBank.loads(found[0]["bank"].encode("utf-8"), self.path(number))
        bank.path = None  # a row of the database, not a file to save to
        return bank

    def report(self, number: int) -> dict:
        found = self.db.rows("SELECT report FROM seer_skill_rounds WHERE round = :n", {"n": number})
        try:
            return json.loads(found[0]["report"]) if found else {}
        except ValueError:
            return {}

    def skill_tag(self, skill_id: str) -> str | None:
        """The tag of a skill of the bank in use (rewards record it), None when the bank has no such skill."""
        skill = self.active()[1].skills.get(skill_id)
        return skill.tag if skill else None

    def consumed(self, number: int) -> int:
        """How many rewards (in log order) rounds 1..number used."""
        return int(self.report(number).get("reward_end", 0))

    def active(self) -> tuple[int, SkillBank]:
        """(round, bank) now in use; the database is asked for a newer round at most once per ACTIVE_TTL_S."""
        with self._mutex:
            if self._active is not None and time.monotonic() - self._checked < ACTIVE_TTL_S:
                return self._active
        try:
            newest = self.db.value("SELECT MAX(round) FROM seer_skill_rounds")
        except StateUnavailable:
            with self._mutex:
                if self._active is None:
                    raise
                self._checked = time.monotonic()  # asked again after ACTIVE_TTL_S, not on every request
                return self._active  # the bank in use stays frozen until the database answers again
        if newest is None:
            raise BadRequest(f"No skill rounds in the state database {self.db.shown}.")
        newest = int(newest)
        with self._mutex:
            current = self._active
        if current is None or current[0] != newest:
            current = (newest, self.bank(newest))
            self._write_latest(current[1])
        with self._mutex:
            self._active, self._checked = current, time.monotonic()
            return self._active

    # -- writing -------------------------------------------------------------------------------------------------
    def _write_latest(self, bank: SkillBank) -> None:
        if self.latest_path is not None:
            try:
                write_atomic(self.latest_path, bank.payload())
            except OSError as exc:
                logger.warning("skill bank copy %s not written (%s)", self.latest_path, exc)

    def seed_round(self, bank: SkillBank, origin: str) -> bool:
        """Round 0 from `bank` unless a round exists; whether this call seeded it."""
        report = {"round": 0, "rewards": 0, "reward_start": 0, "reward_end": 0, "seed": origin,
                  "skills_after": len(bank)}
        with self.db.serialized("skill_rounds") as conn:
            added = conn.execute(self.db.text(
                "INSERT INTO seer_skill_rounds (round, bank, report, closed_at) VALUES (0, :bank, :report, :now) "
                "ON CONFLICT (round) DO NOTHING RETURNING round"),
                {"bank": bank.payload().decode("utf-8"), "report": json.dumps(report), "now": time.time()}).first()
        if added is not None:
            logger.info("skill bank: round 0 seeded from %s (%d skills) in %s", origin, len(bank), self.db.shown)
        return added is not None

    def _ensure_seed(self, seed: Callable[[], SkillBank] | None) -> None:
        if self.rounds():
            if seed is not None:
                logger.warning("skill bank: rounds already exist in %s, so the `skills` setting (the round-0 seed) "
                               "is not read", self.db.shown)
            return
        if seed is not None:
            bank = seed()
            origin = str(bank.path) if bank.path else "the given bank"
        elif self.latest_path is not None and self.latest_path.exists():  # a datastore from before rounds
            bank, origin = SkillBank.load(self.latest_path), str(self.latest_path)
        else:
            bank, origin = SkillBank.starter(), "starter skills"
        self.seed_round(bank, origin)

    def close_due(self, rewards: Sequence[RewardedTrace]) -> list[RoundReport]:
        """Close every round that `rewards` (all rewards so far, in log order) completes, in one serialized
        transaction: a round another server closed meanwhile is read, never closed twice."""
        closed: list[RoundReport] = []
        with self.db.serialized("skill_rounds") as conn:
            last = int(conn.execute(self.db.text("SELECT MAX(round) FROM seer_skill_rounds")).scalar() or 0)
            stored = conn.execute(self.db.text("SELECT report FROM seer_skill_rounds WHERE round = :n"),
                                  {"n": last}).scalar()
            start = int(json.loads(stored or "{}").get("reward_end", 0))
            if len(rewards) - start < self.round_size:
                return closed
            with self._mutex:
                active = self._active
            base = active[1] if active and active[0] == last else self.bank(last)
            for number, bank, report, record in evolve_due(base, rewards, last, start, self.round_size,
                                                           self.settings, self.dataset):
                conn.execute(self.db.text(
                    "INSERT INTO seer_skill_rounds (round, bank, report, closed_at) VALUES (:n, :bank, :report, :now)"),
                    {"n": number, "bank": bank.payload().decode("utf-8"), "report": json.dumps(record),
                     "now": time.time()})
                closed.append(report)
        bank.path = None
        self._write_latest(bank)
        with self._mutex:
            self._active, self._checked = (number, bank), time.monotonic()
        return closed
