"""Keep the server's resident memory close to what its caches hold.

glibc's malloc raises its mmap threshold each time a large block is freed, up to 32 MB, after which volumes,
registrations and SimpleITK images are carved from the heap, whose freed pages are rarely returned to the system;
and every thread that allocates gets an arena of its own. On a server that loads and evicts many 10-100 MB
volumes from a thread pool, RSS then grows far past the caches' bounds. Measured with bench/bench_memory.py (the
real server, 200 requests over 10 studies, caches bounded at 256 MB each): end RSS 1,528 MB with a fixed 128 KiB
threshold and two arenas against 2,206 MB without (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def limit_heap_growth(mmap_threshold: int = 128 * 1024, arena_max: int = 2) -> bool:
    """Serve blocks of `mmap_threshold` bytes or more by mmap (returned to the system when freed) and cap malloc
    arenas at `arena_max`. Call before the worker threads start. False (and nothing changed) off glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_ARENA_MAX, int(arena_max)))
    logger.info("malloc: mmap threshold %d KiB, %d arenas (%s)", mmap_threshold // 1024, arena_max,
                "set" if ok else "refused")
    return ok
