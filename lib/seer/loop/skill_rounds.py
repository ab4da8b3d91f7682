"""The skill bank's rounds on disk, shared by every process that serves one datastore.

    <state>/skills/round-0000.jsonl   the seed: the `skills` setting's file, an existing <state>/skills.jsonl from
                                      before rounds existed, or the starter skills
    <state>/skills/round-NNNN.jsonl   the bank that serves round N, evolved from round N-1 with `round_size` rewards
    <state>/skills/round-NNNN.json    what that round close did (seer.reasoning.skills.RoundReport) and which rewards it used
    <state>/skills.jsonl              a copy of the newest round, for `reason --skills` and other readers

The bank in use is frozen within a round. A round closes when `round_size` rewards beyond the last close exist
in the trace log; every file is written as temp file + fsync + rename under <state>/skills/rounds.lock, report
first and bank second, so a crash at any point leaves the previous round loadable and the close is redone.
Evolution is deterministic, so two processes that close the same round write the same bank.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock

from seer.errors import BadRequest
from seer.files import write_atomic
from seer.reasoning.skills import EvolutionSettings, RewardedTrace, RoundReport, SkillBank, evolve_due

logger = logging.getLogger(__name__)

_ROUND_FILE = re.compile(r"^round-(\d{4,})\.jsonl$")


class SkillRounds:
    def __init__(
        self,
        state_dir: str | os.PathLike,
        seed: Callable[[], SkillBank] | None = None,
        round_size: int = 20,
        settings: EvolutionSettings | None = None,
        dataset: str = "",
        create: bool = True,
    ):
        """seed: the round-0 bank when no round exists yet (an explicit bank file); without it, an existing
        <state>/skills.jsonl from before rounds existed, else the starter skills. create False: only read rounds
        that exist (the CLI), raising BadRequest when there are none."""
        self.state_dir = Path(state_dir)
        self.folder = self.state_dir / "skills"
        self.latest_path = self.state_dir / "skills.jsonl"
        self.round_size = round_size
        self.settings = settings or EvolutionSettings()
        self.dataset = dataset
        self._lock = FileLock(str(self.folder / "rounds.lock")) if create or self.folder.is_dir() else None
        self._mutex = threading.Lock()
        self._active: tuple[int, SkillBank] | None = None
        self._stamp: tuple | None = None
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._ensure_seed(seed)
        elif not self.rounds():
            raise BadRequest(
                f"No skill rounds in {self.folder}: start the server on this studies folder first (it seeds round 0)."
            )

    # -- reading -------------------------------------------------------------------------------------------------
    def path(self, number: int) -> Path:
        return self.folder / f"round-{number:04d}.jsonl"

    def rounds(self) -> list[int]:
        """Round numbers with a bank on disk, ascending."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _ROUND_FILE.match(n)))

    def bank(self, number: int) -> SkillBank:
        if not self.path(number).exists():
            known = self.rounds()
            raise BadRequest(f"There is no skill round {number}; rounds {known[0]}..{known[-1]} exist."
                             if known else f"There is no skill round {number}.")
        return SkillBank.load(self.path(number))

    def report(self, number: int) -> dict:
        """The round's report (RoundReport fields plus reward_start / reward_end); {} when missing."""
        try:
            return json.loads((self.folder / f"round-{number:04d}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def skill_tag(self, skill_id: str) -> str | None:
        """The tag of a skill of the bank in use (rewards record it), None when the bank has no such skill."""
        skill = self.active()[1].skills.get(skill_id)
        return skill.tag if skill else None

    def active(self) -> tuple[int, SkillBank]:
        """(round, bank) now in use; reloaded when a newer round appears on disk (another process closed it)."""
        stamp = _stamp(self.latest_path)
        with self._mutex:
            if self._active is not None and stamp == self._stamp:
                return self._active
        numbers = self.rounds()
        if not numbers:
            raise BadRequest(f"No skill rounds in {self.folder}.")
        newest = numbers[-1]
        with self._mutex:
            if self._active is None or self._active[0] != newest:
                self._active = (newest, SkillBank.load(self.path(newest)))
            self._stamp = stamp
            return self._active

    def consumed(self, number: int) -> int:
        """How many rewards (in log order) rounds 1..number used."""
        return int(self.report(number).get("reward_end", 0))

    # -- writing -------------------------------------------------------------------------------------------------
    def _ensure_seed(self, seed: Callable[[], SkillBank] | None) -> None:
        with self._lock:
            numbers = self.rounds()
            if numbers:
                self._repair_latest(numbers[-1])
                if seed is not None:
                    logger.warning("skill bank: rounds already exist in %s, so the `skills` setting (the round-0 seed) "
                                   "is not read; move that folder away to start again from it", self.folder)
                return
            if seed is not None:
                bank = seed()
                origin = str(bank.path) if bank.path else "the given bank"
            elif self.latest_path.exists():  # a datastore from before rounds: its bank is round 0
                bank = SkillBank.load(self.latest_path)
                origin = str(self.latest_path)
            else:
                bank = SkillBank.starter()
                origin = "starter skills"
            payload = bank.payload()
            report = {"round": 0, "rewards": 0, "reward_start": 0, "reward_end": 0, "seed": origin,
                      "skills_after": len(bank)}
            write_atomic(self.folder / "round-0000.json", json.dumps(report, indent=1).encode())
            write_atomic(self.path(0), payload)
            write_atomic(self.latest_path, payload)
            logger.info("skill bank: round 0 seeded from %s (%d skills)", origin, len(bank))

    def _repair_latest(self, newest: int) -> None:
        """After a crash between a round's bank and the latest copy: make the copy match the newest round."""
        payload = self.path(newest).read_bytes()
        try:
            current = self.latest_path.read_bytes()
        except OSError:
            current = b""
        if current != payload:
            write_atomic(self.latest_path, payload)

    def close_due(self, rewards: Sequence[RewardedTrace]) -> list[RoundReport]:
        """Close every round that `rewards` (all rewards so far, in log order) completes; returns their reports."""
        if self._lock is None:
            raise BadRequest("These skill rounds were opened read-only.")
        closed: list[RoundReport] = []
        with self._lock:
            numbers = self.rounds()
            last = numbers[-1] if numbers else 0
            start = self.consumed(last)
            if len(rewards) - start < self.round_size:
                return closed
            base = self._active[1] if self._active and self._active[0] == last else SkillBank.load(self.path(last))
            for number, bank, report, record in evolve_due(base, rewards, last, start, self.round_size,
                                                           self.settings, self.dataset):
                write_atomic(self.folder / f"round-{number:04d}.json", json.dumps(record, indent=1).encode())
                write_atomic(self.path(number), bank.payload())
                closed.append(report)
            write_atomic(self.latest_path, bank.payload())  # built once per bank
            bank.path = self.path(number)
            with self._mutex:
                self._active = (number, bank)
                self._stamp = _stamp(self.latest_path)
        return closed


def _stamp(path: Path) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
