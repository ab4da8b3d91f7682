"""One bounded, thread-safe cache type for everything SEER keeps in memory.

`BoundedCache` is cachetools' `LRUCache` (bounded by item count, or by bytes through `sizeof`) behind one lock,
with single-flight filling: `get_or_make(key, make)` runs `make` once per key however many threads ask at the same
time; the others wait for it and share its value. The per-key locks live only while a value is being made, so
nothing grows with the number of keys ever seen.

`nbytes(value)` estimates what a value holds in memory (numpy arrays, SimpleITK images, and dataclasses, lists,
dicts and tuples of them), which is what byte-bounded caches are charged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable

import cachetools
import numpy as np

logger = logging.getLogger(__name__)


class BoundedCache:
    """LRU of at most `max_items` values, or of at most `max_bytes` bytes as measured by `sizeof` (default
    `nbytes`). A value larger than the whole byte bound is returned to its caller but not kept."""

    def __init__(self, name: str, max_items: int | None = None, max_bytes: int | None = None,
                 sizeof: Callable[[object], int] | None = None):
        if (max_items is None) == (max_bytes is None):
            raise ValueError("BoundedCache needs exactly one of max_items or max_bytes")
        self.name = name
        self.max_bytes = max_bytes
        if max_bytes is not None:
            self._items = cachetools.LRUCache(maxsize=max(int(max_bytes), 1), getsizeof=sizeof or nbytes)
        else:
            self._items = cachetools.LRUCache(maxsize=max(int(max_items), 1))
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}
        self.hits = self.misses = self.too_large = 0

    def get(self, key: Hashable, default=None):
        with self._lock:
            try:
                value = self._items[key]  # an LRU read: marks the key recently used
            except KeyError:
                self.misses += 1
                return default
            self.hits += 1
            return value

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            try:
                self._items[key] = value
            except ValueError:  # larger than the whole bound
                self._items.pop(key, None)
                self.too_large += 1
                logger.info("%s cache: an item of %.0f MB exceeds the bound of %.0f MB; not kept", self.name,
                            nbytes(value) / 2**20, (self.max_bytes or 0) / 2**20)

    def get_or_make(self, key: Hashable, make: Callable[[], object]):
        """The cached value of `key`, else `make()` (run by one thread; concurrent askers wait and share it)."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            lock = self._making.setdefault(key, threading.Lock())
        try:
            with lock:
                value = self.get(key)
                if value is None:
                    value = make()
                    if value is not None:
                        self.put(key, value)
                return value
        finally:
            with self._lock:
                if not lock.locked():
                    self._making.pop(key, None)

    def pop(self, key: Hashable, default=None):
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def cached_keys(self) -> list:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._items.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def size(self) -> int:
        """Bytes held (byte-bounded) or items held (count-bounded)."""
        with self._lock:
            return int(self._items.currsize)

    def stats(self) -> dict:
        with self._lock:
            out = {"items": len(self._items), "hits": self.hits, "misses": self.misses}
            if self.max_bytes is not None:
                out.update(mb=round(self._items.currsize / 2**20, 1), max_mb=round(self.max_bytes / 2**20, 1),
                           too_large=self.too_large)
            else:
                out["max_items"] = int(self._items.maxsize)
            return out


def nbytes(value, _seen: set | None = None) -> int:
    """Approximate memory held by `value` in bytes: numpy arrays and SimpleITK images by their pixel buffers,
    containers and dataclasses by their contents (each object counted once); anything else 64 bytes."""
    seen = _seen if _seen is not None else set()
    if value is None or id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return 0 if value.base is not None and id(value.base) in seen else int(value.nbytes)
    if _is_sitk_image(value):
        return int(value.GetNumberOfPixels() * value.GetNumberOfComponentsPerPixel() * value.GetSizeOfPixelComponent())
    if isinstance(value, dict):
        return 64 + sum(nbytes(k, seen) + nbytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 64 + sum(nbytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return 64 + sum(nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, (str, bytes)):
        return 49 + len(value)
    return 64


def _is_sitk_image(value) -> bool:
    return type(value).__name__ == "Image" and hasattr(value, "GetNumberOfPixels")
