"""The annotation loop: saved final labels -> rewards -> skill rounds, on one background worker.

Saving a label only enqueues the study (a bounded queue; when it is full the study is picked up by the next scan),
so `PUT /datastore/label` stays as fast as without rewards. The worker rewards the study's pending proposals
(seer.loop.rewards), appends the rows to the trace log, and closes every skill round the new rewards complete
(seer.loop.skill_rounds). Pending work is found from the trace log alone: on start-up, and every `scan_every_s` while
idle (which also notices label files copied into the datastore by hand), every labelled study with unrewarded
proposals is processed again, so a crash or restart loses nothing and a proposal is rewarded once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from seer.errors import StateUnavailable
from seer.loop.rewards import FinalLabel, Rewarder, TraceLedger
from seer.loop.skill_rounds import SkillRounds
from seer.reasoning.skills import SkillBank

logger = logging.getLogger(__name__)

_SCAN = "\x00scan"


class AnnotationLoop:
    """final_label(study) -> FinalLabel | None and labelled() -> study ids: the datastore, as the app sees it;
    on_round(number, bank): called after rounds close (the app hands the new bank to the pipeline);
    after_job(): called after each job, off the request path (the app warms the skill index there);
    teaches(study): whether the study's label may teach now (review): asked before its rewards are computed and
    again before they are recorded, so a label rejected meanwhile earns nothing."""

    def __init__(
        self,
        ledger: TraceLedger,
        rounds: SkillRounds,
        rewarder: Rewarder,
        final_label: Callable[[str], FinalLabel | None],
        labelled: Callable[[], list[str]],
        on_round: Callable[[int, SkillBank], None] | None = None,
        after_job: Callable[[], None] | None = None,
        queue_size: int = 256,
        scan_every_s: float = 30.0,
        teaches: Callable[[str], bool] | None = None,
    ):
        self.ledger = ledger
        self.rounds = rounds
        self.rewarder = rewarder
        self.final_label = final_label
        self.labelled = labelled
        self.on_round = on_round
        self.after_job = after_job
        self.teaches = teaches
        self.scan_every_s = scan_every_s
        self._queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self._queued: set[str] = set()
        self._mutex = threading.Lock()
        self._rescan = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self._bank_seen: SkillBank | None = None

    # -- control -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; its first job is a scan for rewards and rounds left pending by a crash or restart."""
        if self._thread is not None:
            return
        self._bank_seen = self.rounds.active()[1]  # the bank the pipeline starts with
        self._rescan.set()
        self._idle.clear()
        self._thread = threading.Thread(target=self._run, name="seer-rewards", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._rescan.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, study: str) -> bool:
        """Queue a study whose final label was saved (never blocks). False when the queue is full: the study is
        then found by the next scan instead."""
        with self._mutex:
            if study in self._queued:
                return True
            try:
                self._queue.put_nowait(study)
            except queue.Full:
                self._rescan.set()
                logger.warning("reward queue full; '%s' will be rewarded by the next scan", study)
                return False
            self._queued.add(study)
            self._idle.clear()
            return True

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until every queued study is processed (tests, CLI); False on timeout."""
        return self._idle.wait(timeout)

    def queued(self) -> int:
        """Studies waiting for the worker."""
        return self._queue.qsize()

    def status(self) -> dict:
        number, bank = self.rounds.active()
        return {
            "round": number,
            "skills": len(bank),
            "rewards": self.ledger.reward_count(),
            "round_size": self.rounds.round_size,
            "queued": self.queued(),
            "errors": self.errors,
        }

    # -- work ----------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            if self._rescan.is_set() or time.monotonic() - last_scan >= self.scan_every_s:
                self._rescan.clear()
                self._guard(self.scan)
                last_scan = time.monotonic()
            try:
                study = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._guard(self.sync_round)
                self._set_idle_if_done()
                continue
            with self._mutex:
                self._queued.discard(study)
            self._guard(lambda s=study: self.process(s))
            self._guard(self.close_rounds)
            if self.after_job is not None:
                self._guard(self.after_job)
            self._set_idle_if_done()

    def _set_idle_if_done(self) -> None:
        with self._mutex:  # submit() queues and clears `_idle` under the same mutex
            if self._queue.empty() and not self._queued and not self._rescan.is_set():
                self._idle.set()

    def _guard(self, job: Callable[[], object]) -> None:
        try:
            job()
        except StateUnavailable as exc:  # done again by the next scan once the database answers
            self.errors += 1
            logger.warning("annotation loop: %s", exc.message)
        except Exception:  # noqa: BLE001 - the worker must survive one bad study; the log says which
            self.errors += 1
            logger.exception("annotation loop: a job failed")

    def scan(self) -> None:
        """Reward every labelled study that has unrewarded proposals, then close due rounds (one failing study
        does not stop the others)."""
        labelled = set(self.labelled())
        for study in self.ledger.studies_with_pending():
            if study in labelled:
                self._guard(lambda s=study: self.process(s))
        self.close_rounds()

    def process(self, study: str) -> int:
        """Reward the study's pending proposals against its final label; returns how many rewards were added."""
        if self.teaches is not None and not self.teaches(study):
            return 0
        final = self.final_label(study)
        if final is None:
            return 0
        pending = self.ledger.pending(study, final.stamp, final.saved_at)
        if not pending:
            return 0
        started = time.perf_counter()
        rows, why = self.rewarder.rows(final, pending)
        if self.teaches is not None and not self.teaches(study):
            logger.info("[%s] its label was rejected while its rewards were computed: none recorded", study)
            return 0
        if why:
            logger.warning("no reward for %d proposal(s): %s", len(pending), why)
        added = 0
        for row in rows:
            if not self.ledger.append(row):
                continue
            if row["type"] == "reward":
                added += 1
                logger.info("[%s] reward %s: '%s' -> %s, Dice %.3f (raw request %.3f, gain %+.3f)", study,
                            row["trace_id"][:8], str(row.get("request"))[:60], row["target"]["name"], row["dice"],
                            row["raw_dice"], row["gain"])
            elif not why:
                logger.warning("[%s] no reward for %s: %s", study, row["trace_id"][:8], row["reason"])
        if added:
            logger.info("[%s] %d reward(s) in %.2f s", study, added, time.perf_counter() - started)
        return added

    def close_rounds(self) -> None:
        self.ledger.refresh()
        number, _ = self.rounds.active()
        if self.ledger.reward_count() - self.rounds.consumed(number) < self.rounds.round_size:
            return
        self.rounds.close_due(self.ledger.rewarded_traces())
        self.sync_round()

    def sync_round(self) -> None:
        """Hand the active round's bank to `on_round` when it changed: closed here, or by another process on the
        same datastore (a stat call when nothing changed)."""
        number, bank = self.rounds.active()
        if bank is not self._bank_seen:
            if self._bank_seen is not None and self.on_round is not None:
                self.on_round(number, bank)
            self._bank_seen = bank
