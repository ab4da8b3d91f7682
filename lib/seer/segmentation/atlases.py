"""Atlas sources and the stable label registry of the atlas backbone.

An atlas is an image with an integer label map and its names. Sources: bundled atlas folders
(`<dir>/<name>/image.nii.gz, labels.nii.gz, labels.json`, as `main.py sample-data` writes them) and every study of
the datastore with a final label (the app lists those), so a team's own labels become atlases as they annotate.

The registry gives each distinct target a stable id, kept in a JSON file: names that mean the same structure
("hip_left", "Hip_L") share one id; new names get the next free id; ids are never reused.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from filelock import FileLock

from seer.files import write_atomic
from seer.reasoning.label_names import decode_label_name
from seer.reasoning.lexicon import default_lexicon
from seer.reasoning.parser import Parser
from seer.reasoning.targets import label_aliases, label_mapping

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AtlasSource:
    """name: unique; names: label value in the label file -> structure name; origin: "bundled" | "datastore"."""

    name: str
    image_path: str
    label_path: str
    names: dict[int, str] = field(hash=False)
    origin: str = "bundled"
    aliases: dict[int, tuple[str, ...]] = field(default_factory=dict, hash=False)  # the team's own names, by value


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """A labels.json ({"1": "liver"} or {"liver": 1}) as value -> name, background dropped (targets.label_mapping);
    entries of neither form are skipped."""
    return label_mapping(json.loads(Path(path).read_text(encoding="utf-8")), strict=False)


def bundled_atlases(dirs: list[str | os.PathLike]) -> list[AtlasSource]:
    """Atlas folders under each of `dirs`, sorted by name; incomplete folders are skipped with a warning."""
    sources: list[AtlasSource] = []
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            image = _first(folder, ("image.nii.gz", "image.nii"))
            labels = _first(folder, ("labels.nii.gz", "labels.nii"))
            names_file = folder / "labels.json"
            if not (image and labels and names_file.exists()):
                logger.warning("skipping atlas folder %s: needs image.nii.gz, labels.nii.gz and labels.json", folder)
                continue
            try:
                names = read_label_names(names_file)
                aliases = label_aliases(json.loads(names_file.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                logger.warning("skipping atlas folder %s: labels.json unreadable (%s)", folder, exc)
                continue
            sources.append(AtlasSource(folder.name, str(image), str(labels), names, "bundled", aliases))
    return sources


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


@lru_cache(maxsize=4096)
def structure_key(name: str) -> tuple:
    """What a label name means, independent of its spelling style: ("hip_left", "Hip_L", "left hipbone") share one
    key (canonical tokens, side); a name the lexicon cannot read keys on its lowercase text."""
    decoded = decode_label_name(name, default_lexicon())  # "Parotid_L" and "left parotid" share a key
    vocabulary = default_lexicon().words(decoded)
    parsed = Parser(default_lexicon(), vocabulary, shared_cache=False).parse(decoded, correct_typos=False)
    if not parsed.tokens:
        return ("name", name.lower())
    return (frozenset(parsed.tokens), parsed.side)


class LabelRegistry:
    """Stable target ids. `path` None keeps the registry in memory (CLI use without a datastore)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self._ids: dict[str, int] = {}
        self._keys: dict[tuple, str] = {}
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                for name, value in data.get("labels", {}).items():
                    self._add(name, int(value))
            except (OSError, ValueError) as exc:
                logger.warning("label registry %s unreadable (%s); starting a new one", self.path, exc)

    def _key(self, name: str) -> tuple:
        return structure_key(name)

    def _add(self, name: str, value: int) -> None:
        self._ids[name] = value
        self._keys.setdefault(self._key(name), name)

    def _known(self, name: str) -> int | None:
        if name in self._ids:
            return self._ids[name]
        same = self._keys.get(self._key(name))
        return self._ids[same] if same is not None else None

    def ensure(self, names: list[str]) -> dict[str, int]:
        """Ids for `names`; returns name -> id for each name. New ids are allocated under the file lock from the
        file's current content (another process on the same datastore may have added ids since we read it), then
        the file is rewritten atomically before the lock is released: two processes never give one id to two
        structures."""
        with self._lock:
            if any(self._known(name) is None for name in names):
                if self.path is None:
                    self._allocate(names)
                else:
                    with FileLock(str(self.path) + ".lock"):
                        self._merge_file()
                        if self._allocate(names):
                            payload = json.dumps({"labels": self._ids}, indent=1, ensure_ascii=False).encode()
                            write_atomic(self.path, payload)
            return {name: self._known(name) for name in names}

    def _allocate(self, names: list[str]) -> bool:
        added = False
        for name in names:
            if self._known(name) is None:
                self._add(name, max(self._ids.values(), default=0) + 1)
                added = True
        return added

    def _merge_file(self) -> None:
        """Take in the ids another process wrote (caller holds the file lock)."""
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("label registry %s unreadable (%s); keeping the ids in memory", self.path, exc)
            return
        for name, value in data.get("labels", {}).items():
            if name not in self._ids:
                self._add(name, int(value))

    def table(self) -> dict[int, str]:
        """id -> display name (the first name registered for that id)."""
        with self._lock:
            items = list(self._ids.items())
        shown: dict[int, str] = {}
        for name, value in items:
            shown.setdefault(value, name)
        return dict(sorted(shown.items()))
