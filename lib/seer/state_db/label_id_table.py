"""The label-id registries in the shared state database: `DatabaseLabelRegistry` has
`seer.segmentation.atlases.LabelRegistry`'s interface. A new name's id is allocated in one serialized transaction
from every id any server has given (`seer_label_ids`), so one structure gets one id on every server and no id
names two structures.
"""

from __future__ import annotations

import contextlib
import logging
import time

from seer.errors import StateUnavailable
from seer.segmentation.atlases import LabelRegistry
from seer.state_db.database import StateDatabase

logger = logging.getLogger(__name__)

READ_EVERY_S = 1.0  # how often `table()` reads the ids other servers gave


class DatabaseLabelRegistry(LabelRegistry):
    """Stable target ids of registry `name` ("label_table" for the atlas backbone, "voxtell_labels" for VoxTell)."""

    def __init__(self, db: StateDatabase, name: str):
        super().__init__(None)
        self.db = db
        self.name = name
        self._read_at = 0.0
        self._read_others()

    def _read_others(self) -> None:
        """Take in the ids other servers gave since the last read (at most once per READ_EVERY_S; the ids known
        stay in use while the database does not answer)."""
        if time.monotonic() - self._read_at < READ_EVERY_S:
            return
        try:
            rows = self.db.rows("SELECT name, id FROM seer_label_ids WHERE registry = :r", {"r": self.name})
        except StateUnavailable:
            return
        with self._lock:
            self._merge_rows(rows)
            self._read_at = time.monotonic()

    def table(self) -> dict[int, str]:
        """id -> display name, with the ids every server gave."""
        self._read_others()
        return super().table()

    @contextlib.contextmanager
    def _kept_on_failure(self):
        """Ids allocated in memory are forgotten when their transaction does not commit (the database went away):
        an id this server never stored is never handed out later (caller holds _lock)."""
        ids, keys = dict(self._ids), dict(self._keys)
        try:
            yield
        except BaseException:
            self._ids, self._keys = ids, keys
            raise

    def _merge_rows(self, rows: list[dict]) -> None:
        for row in rows:
            if row["name"] not in self._ids:
                self._add(row["name"], int(row["id"]))

    def ensure(self, names: list[str]) -> dict[str, int]:
        """Ids for `names` (name -> id). Unknown names are allocated after reading what other servers added,
        inside one serialized transaction."""
        with self._lock:
            if any(self._known(name) is None for name in names):
                with self._kept_on_failure(), self.db.serialized("label_ids") as conn:
                    self._merge_rows([dict(r) for r in conn.execute(self.db.text(
                        "SELECT name, id FROM seer_label_ids WHERE registry = :r"), {"r": self.name}).mappings()])
                    before = set(self._ids)
                    self._allocate(names)
                    added = [{"r": self.name, "name": n, "id": self._ids[n]} for n in self._ids if n not in before]
                    if added:
                        conn.execute(self.db.text(
                            "INSERT INTO seer_label_ids (registry, name, id) VALUES (:r, :name, :id)"), added)
            return {name: self._known(name) for name in names}

    def import_ids(self, ids: dict[str, int]) -> tuple[int, list[str]]:
        """Take in a registry file's ids (name -> id): (names added, names whose id differs from the database's,
        which keep the database's). A name whose id another structure holds here gets a new id."""
        conflicts: list[str] = []
        with self._lock, self._kept_on_failure(), self.db.serialized("label_ids") as conn:
            self._merge_rows([dict(r) for r in conn.execute(self.db.text(
                "SELECT name, id FROM seer_label_ids WHERE registry = :r"), {"r": self.name}).mappings()])
            taken = set(self._ids.values())
            before = set(self._ids)
            for name, value in ids.items():
                known = self._known(name)
                if known is not None:
                    if known != int(value):
                        conflicts.append(name)
                    continue
                if int(value) in taken:
                    conflicts.append(name)
                    self._allocate([name])
                else:
                    self._add(name, int(value))
                taken.add(self._ids[name])
            added = [{"r": self.name, "name": n, "id": self._ids[n]} for n in self._ids if n not in before]
            if added:
                conn.execute(self.db.text("INSERT INTO seer_label_ids (registry, name, id) VALUES (:r, :name, :id)"),
                             added)
        return len(added), conflicts
