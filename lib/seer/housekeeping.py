"""Disk bounds for a datastore's `.seer` folder: registrations, proposals and results are pruned by age and size.

- registrations/<pair>/: kept up to `registrations_mb`; the least recently used (folder mtime, touched on every
  load) go first. A pruned pair is registered again when next asked for.
- proposals/*.nii.gz: a proposal whose reward is recorded is deleted `proposals_days` after it was made; beyond
  `proposals_mb` the oldest go first, rewarded or not (a reward that then finds its proposal gone is skipped and
  counted, as for any vanished file).
- results/: replies already sent; anything older than `results_hours` goes.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskLimits:
    registrations_mb: float = 4096.0
    proposals_days: float = 30.0
    proposals_mb: float = 2048.0
    results_hours: float = 24.0


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(_size(p) for p in path.iterdir())
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _entries(folder: Path) -> list[tuple[float, int, Path]]:
    """(mtime, bytes, path) of each entry of `folder`, oldest first."""
    out = []
    if not folder.is_dir():
        return out
    for path in folder.iterdir():
        try:
            out.append((path.stat().st_mtime, _size(path), path))
        except OSError:
            continue
    return sorted(out)


def _remove(path: Path) -> bool:
    try:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("could not prune %s: %s", path, exc)
        return False


def prune(state_dir: str | os.PathLike, limits: DiskLimits, rewarded: set[str] | None = None,
          now: float | None = None) -> dict:
    """Prune `state_dir`'s registrations, proposals and results to `limits`; `rewarded` holds the paths of proposals
    whose reward is recorded. Returns {folder: {"removed": n, "freed_mb": x, "kept_mb": y}}."""
    state_dir = Path(state_dir)
    now = time.time() if now is None else now
    rewarded = {os.path.realpath(p) for p in (rewarded or ())}
    report = {}

    def run(name: str, doomed: Callable[[float, Path], bool], max_bytes: float | None) -> None:
        entries = _entries(state_dir / name)
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for mtime, size, path in entries:  # oldest first
            over = max_bytes is not None and total > max_bytes
            if (over or doomed(mtime, path)) and _remove(path):
                removed += 1
                freed += size
                total -= size
        report[name] = {"removed": removed, "freed_mb": round(freed / 2**20, 2), "kept_mb": round(total / 2**20, 2)}

    run("registrations", lambda mtime, path: False, limits.registrations_mb * 2**20)
    run("proposals", lambda mtime, path: (now - mtime > limits.proposals_days * 86400
                                           and os.path.realpath(path) in rewarded), limits.proposals_mb * 2**20)
    run("results", lambda mtime, path: now - mtime > limits.results_hours * 3600, None)
    return report


class Housekeeper:
    """Prunes a state folder now and then every `interval_s` on a daemon thread; `last` is the latest report."""

    def __init__(self, state_dir: str | os.PathLike, limits: DiskLimits, rewarded: Callable[[], set[str]],
                 interval_s: float = 3600.0, stored: Callable[[DiskLimits], int] | None = None):
        """stored: prunes the proposal masks kept in the shared state database to `limits`, returning how many
        went (seer.state_db.trace_table.DatabaseTraceLog.prune_proposals)."""
        self.stored = stored
        self.state_dir = Path(state_dir)
        self.limits = limits
        self.rewarded = rewarded
        self.interval_s = interval_s
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seer-housekeeping", daemon=True)

    def start(self) -> Housekeeper:
        """Prune once now (a listing of three folders), then every `interval_s` on the daemon thread."""
        self._once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> dict:
        started = time.perf_counter()
        report = prune(self.state_dir, self.limits, self.rewarded())
        if self.stored is not None:
            report["stored_proposals"] = {"removed": self.stored(self.limits)}
        self.last = {**report, "at": round(time.time(), 1), "seconds": round(time.perf_counter() - started, 3)}
        removed = sum(v["removed"] for v in self.last.values() if isinstance(v, dict))
        if removed:
            logger.info("housekeeping: pruned %s", self.last)
        return self.last

    def _once(self) -> None:
        try:
            self.run_once()
        except Exception:  # noqa: BLE001 - housekeeping must never stop the server
            logger.exception("housekeeping failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._once()
