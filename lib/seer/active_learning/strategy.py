"""SEER-Trace active learning for one datastore: keeps the study-state database in step with the datastore,
scores unlabelled studies in the background (seer.active_learning.scoring) and hands out the next study with a lease
(seer.active_learning.study_state). Framework-free: the MONAI Label app passes in how to list studies and load volumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from seer.active_learning.scoring import StudyScorer, campaign_from_traces, trace_requests_by_target
from seer.active_learning.study_state import Release, StudyState
from seer.imaging.volume import Volume

logger = logging.getLogger(__name__)

# The campaign fallback and the phrasings read the newest this many traces of the log (archives included).
TRACE_WINDOW = 10_000
# What they read of a trace row (the rest, model text and timings, stays on disk).
TRACE_FIELDS = ("id", "study", "request", "request_clean", "target", "target_phrase", "refused")


def recent_traces(log, limit: int = TRACE_WINDOW) -> list[dict]:
    """The newest `limit` trace rows of a seer.loop.trace_log.TraceLog (None: none), newest first, archives
    included, with the fields active learning reads."""
    if log is None:
        return []
    return [{k: row[k] for k in TRACE_FIELDS if k in row} for row in log.history(limit=limit)]


class ActiveLearning:
    """list_studies() -> ({study: image stamp}, [labelled study ids]); load_volume(study) -> Volume;
    trace_rows() -> the newest trace rows of the log, archives included (`recent_traces`: campaign fallback and
    phrasings); campaign: the `campaign` setting; one_per_client: the `lease_one_per_client` setting (asking for
    the next study gives back the one held)."""

    def __init__(
        self,
        state: StudyState,
        scorer: StudyScorer,
        *,
        list_studies: Callable[[], tuple[dict[str, str], list[str]]],
        load_volume: Callable[[str], Volume],
        trace_rows: Callable[[], list[dict]],
        campaign: list[str] | None = None,
        lease_s: float = 1800.0,
        scan_every_s: float = 30.0,
        one_per_client: bool = True,
    ):
        self.state = state
        self.scorer = scorer
        self.list_studies = list_studies
        self.load_volume = load_volume
        self.trace_rows = trace_rows
        self.configured_campaign = list(campaign or [])
        self.lease_s = lease_s
        self.scan_every_s = scan_every_s
        self.one_per_client = one_per_client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._scoring = threading.Lock()  # one scoring pass at a time (background or POST /scoring/seer)
        self._thread: threading.Thread | None = None
        self._progress: dict = {"state": "idle"}
        self.last_run: dict | None = None
        self.errors = 0

    # -- control -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Sync with the datastore now (so that the first hand-out knows every study), score in the background,
        then look for new studies every `scan_every_s`."""
        if self._thread is None:
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the worker retries; hand-outs wait for it
                logger.exception("active learning: the start-up sync failed")
            self._wake.set()
            self._thread = threading.Thread(target=self._run, name="seer-active-learning", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def trigger(self, why: str) -> None:
        """Ask the background worker for a scoring pass (a skill round closed, POST /scoring/seer, ...)."""
        logger.info("active learning: scoring requested (%s)", why)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.scan_every_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                changes = self.sync()
                if woken or changes["added"] or changes["restamped"]:
                    self.run_scoring()
            except Exception:  # noqa: BLE001 - the worker must survive; the log says what failed
                self.errors += 1
                logger.exception("active learning: a scoring pass failed")

    # -- state ---------------------------------------------------------------------------------------------------
    def sync(self) -> dict:
        studies, labelled = self.list_studies()
        changes = self.state.sync_studies(studies, labelled)
        if any(changes.values()):
            logger.info("active learning: studies %s", ", ".join(f"{k} {v}" for k, v in changes.items() if v))
        return changes

    def campaign(self) -> tuple[list[str], str]:
        """(requests, where they come from)."""
        if self.configured_campaign:
            return self.configured_campaign, "setting 'campaign'"
        found = campaign_from_traces(self.trace_rows())
        return found, "most frequent targets in the trace log" if found else "none"

    def on_saved(self, study: str, holder: str | None = None) -> bool:
        """A final label was saved (by `holder`, a `lease_holder` key, when the save names one): the study leaves the
        pool and its lease ends, or with reads_per_study N it stays in the pool for other readers until N read it.
        A label that came without a reader (copied into the datastore) counts as one read only when N is 1.
        Whether the study is labelled now."""
        if holder is not None:
            return self.state.record_reader(study, holder)
        if self.state.reads_per_study == 1:
            self.state.mark_labelled(study)
            return True
        return False

    # -- scoring -------------------------------------------------------------------------------------------------
    def run_scoring(self, say: Callable[[str], None] | None = None) -> dict:
        """One pass: the evidence pass (in-view flags of unscored studies), then scoring of every unlabelled study
        whose image, skill round or stamps changed. Returns counts and seconds."""
        say = say or (lambda message: logger.info("active learning: %s", message))
        with self._scoring:
            started = time.perf_counter()
            campaign, source = self.campaign()
            if not campaign:
                self._progress = {"state": "idle", "note": "no campaign: set --conf campaign, or make requests so "
                                  "that the trace log shows what the team labels"}
                return {"campaign": [], "scored": 0, "unchanged": 0, "failed": 0, "seconds": 0.0}
            rows = self.trace_rows()
            by_target = trace_requests_by_target(rows)
            phrasings = {request: self.scorer.phrasings(request, by_target) for request in campaign}
            stamps = self.scorer.stamps(phrasings)
            pool = self.state.unlabelled()
            previous = self.state.all_scores()
            evidence_done = self._evidence_pass(previous, campaign, say)
            scored = unchanged = failed = 0
            todo = []
            for study, stamp in sorted(pool.items()):
                old = {r: previous.get((study, r)) for r in campaign}
                if all(stamps.current(row, stamp or "") for row in old.values()):
                    unchanged += 1
                else:
                    todo.append((study, stamp, {r: row for r, row in old.items() if row is not None}))
            say(f"scoring {len(todo)} of {len(pool)} unlabelled studies for {campaign} ({source}); "
                f"{unchanged} unchanged")
            last_said = time.monotonic()
            for n, (study, stamp, old) in enumerate(todo, start=1):
                if self._stop.is_set():
                    break
                self._progress = {"state": "scoring", "done": n - 1, "total": len(todo), "campaign": campaign}
                try:
                    volume = self.load_volume(study)
                    result = self.scorer.score(study, stamp or "", volume, campaign, phrasings, old, stamps)
                    self.state.save_scores(study, result.rows, result.priority, result.request, result.in_view)
                    scored += 1
                except Exception as exc:  # noqa: BLE001 - one unreadable study does not stop the pass
                    failed += 1
                    logger.warning("active learning: could not score '%s': %s", study, getattr(exc, "message", exc))
                if time.monotonic() - last_said > 10 or n == len(todo):
                    say(f"scored {n}/{len(todo)} studies ({failed} failed)")
                    last_said = time.monotonic()
            summary = {"campaign": campaign, "campaign_source": source, "evidence": evidence_done, "scored": scored,
                       "unchanged": unchanged, "failed": failed, "skill_round": stamps.skill_round,
                       "seconds": round(time.perf_counter() - started, 3)}
            self.last_run = summary
            self._progress = {"state": "idle"}
            return summary

    def _evidence_pass(self, previous: dict, campaign: list[str], say) -> int:
        """In-view flags for unlabelled studies that have no score yet (foreground-aware random uses them while the
        full scoring runs)."""
        scored = {study for study, _ in previous}
        pending = sorted(self.state.unchecked() - scored)
        if not pending:
            return 0
        say(f"evidence pass over {len(pending)} unscored studies")
        flags: dict[str, bool] = {}
        for n, study in enumerate(pending, start=1):
            if self._stop.is_set():
                break
            self._progress = {"state": "evidence", "done": n - 1, "total": len(pending)}
            try:
                flags[study] = self.scorer.in_view(self.load_volume(study), campaign)
            except Exception as exc:  # noqa: BLE001
                logger.warning("active learning: no evidence for '%s': %s", study, getattr(exc, "message", exc))
            if len(flags) >= 50:
                self.state.set_in_view(flags)
                flags = {}
        self.state.set_in_view(flags)
        return len(pending)

    # -- hand-out ------------------------------------------------------------------------------------------------
    def next_study(self, holder: str, client_id: str | None = None) -> dict:
        """The reply of POST /activelearning/seer (without the datastore's image info) to `holder` (a
        `lease_holder` key: the user narrowed by the client's `client_id`)."""
        got = self.state.hand_out(holder, self.lease_s, one_per_client=self.one_per_client)
        if got is None:
            counts = self.state.counts()
            free = counts["studies"] - counts["labelled"]
            if free <= 0:
                message = f"Every study in the datastore is labelled ({counts['studies']} studies); nothing to hand out."
            elif self.state.reads_per_study > 1:
                message = (f"Each of the {free} studies still short of {self.state.reads_per_study} reads is held by "
                           "another annotator or was read by you already (reads_per_study: a study is never handed "
                           f"twice to one annotator); a lease ends when its study is saved or released, or after "
                           f"{self.lease_s:.0f} s.")
            else:
                message = (f"All {free} unlabelled studies are held by other annotators; a lease ends when its "
                           f"study is saved or released, or after {self.lease_s:.0f} s.")
            return {"strategy": "seer", "message": message, "unlabelled": free, "leased": counts["leased"]}
        reply = {"id": got.study, "strategy": "seer", "selection": got.selection, "client_id": client_id,
                 "holder": holder, "lease_s": self.lease_s, "lease_expires": round(got.expires_at, 3)}
        if got.given_back:
            reply["given_back"] = list(got.given_back)
        if got.selection == "score":
            rows = self.state.scores(got.study)
            best = next((r for r in rows if r.request == got.request), None)
            reply["reasons"] = {
                "request": got.request,
                "priority": got.priority,
                "in_view": got.in_view is not False,
                "score": best.score if best else None,
                "parts": best.parts() if best else {},
                "skill_round": best.skill_round if best else None,
                "target": best.details.get("target") if best else None,
                "requests": [{"request": r.request, "score": r.score, **r.parts()} for r in rows],
            }
        else:
            campaign, source = self.campaign()
            if got.selection == "foreground-aware random":
                reply["note"] = ("No unlabelled study is scored yet: picked at random among the studies whose image "
                                 f"evidence puts the campaign's targets ({', '.join(campaign)}) in view "
                                 "(foreground-aware random).")
            elif campaign:
                reply["note"] = (f"No unlabelled study is scored or checked yet for the campaign "
                                 f"({', '.join(campaign)}; {source}): picked at random. Scoring runs in the "
                                 "background (POST /scoring/seer starts it).")
            else:
                reply["note"] = ("No campaign yet (set --conf campaign 'left hip bone; sacrum', or make requests so "
                                 "that the trace log shows what the team labels): picked at random.")
        return reply

    def release(self, study: str, holder: str, admin: bool = False) -> Release:
        """End `holder`'s lease on `study` (anyone's when `admin`); see StudyState.release."""
        return self.state.release(study, holder, admin=admin)

    def status(self) -> dict:
        campaign, source = self.campaign()
        return {"campaign": campaign, "campaign_source": source, "lease_s": self.lease_s,
                "database": self.state.dialect, **self.state.counts(), "scoring": dict(self._progress),
                "last_run": self.last_run, "errors": self.errors}
