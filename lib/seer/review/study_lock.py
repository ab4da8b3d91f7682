"""Changes to one study's final label take turns: a save (whether it may replace the label, the file written, the
read recorded as the label's holder) and a review decision (the approved read written back, the holder moved) never
interleave, so the datastore's label is always the file of the read recorded as holding it.

Within a server a reentrant lock per study; across servers sharing a PostgreSQL `state_db`, a session-level
advisory lock per study as well, taken on one connection that the server keeps for these locks
(`pg_try_advisory_lock`, retried every 50 ms, so one connection serves any number of studies). Two studies whose
keys collide only take turns. Several servers on one SQLite file are not serialized across processes (one server
per studies folder is the SQLite set-up).
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Iterator

from seer.errors import StateUnavailable

LOCK_CLASS = 715_010  # first key of the two-key advisory locks (the second is the study's)
POLL_S = 0.05


def study_key(study: str) -> int:
    """A stable signed 32-bit key of a study id (crc32)."""
    value = zlib.crc32(study.encode("utf-8"))
    return value - 2**32 if value >= 2**31 else value


class StudyLocks:
    def __init__(self, engine=None, timeout_s: float = 120.0):
        """engine: an SQLAlchemy engine on PostgreSQL for the cross-server locks, or None (this server only)."""
        self.engine = engine
        self.timeout_s = timeout_s
        self._guard = threading.Lock()
        self._local: dict[str, list] = {}  # study -> [RLock, holders and waiters]
        self._connection = None
        self._connection_guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, study: str) -> Iterator[None]:
        """Hold `study`'s lock (reentrant in one thread). StateUnavailable (503) when PostgreSQL does not answer or
        another server holds the study longer than `timeout_s`."""
        with self._guard:
            entry = self._local.setdefault(study, [threading.RLock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                if self.engine is None:
                    yield
                    return
                self._acquire_shared(study)
                try:
                    yield
                finally:
                    self._release_shared(study)
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    self._local.pop(study, None)

    def _statement(self, sql: str, key: int):
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        with self._connection_guard:
            for attempt in (1, 2):  # a kept connection may have died with a database restart: one new one is tried
                try:
                    if self._connection is None:
                        self._connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    return self._connection.execute(text(sql), {"a": LOCK_CLASS, "b": key}).scalar()
                except StateUnavailable:  # the engine's own sentence for a database that went away
                    self._drop_connection()
                    if attempt == 2:
                        raise
                except SQLAlchemyError as exc:
                    self._drop_connection()
                    if attempt == 2:
                        raise StateUnavailable(f"The state database does not answer ({type(exc).__name__}); the "
                                               "study's label was not changed.") from None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None  # its locks went with it

    def _acquire_shared(self, study: str) -> None:
        key = study_key(study)
        deadline = time.monotonic() + self.timeout_s
        while not self._statement("SELECT pg_try_advisory_lock(:a, :b)", key):
            if time.monotonic() > deadline:
                raise StateUnavailable(f"Another server has been changing the label of '{study[:80]}' for over "
                                       f"{self.timeout_s:.0f} s; nothing was changed, try again.")
            time.sleep(POLL_S)

    def _release_shared(self, study: str) -> None:
        with contextlib.suppress(StateUnavailable):  # a lost connection released its locks already
            self._statement("SELECT pg_advisory_unlock(:a, :b)", study_key(study))

    def close(self) -> None:
        with self._connection_guard:
            self._drop_connection()
