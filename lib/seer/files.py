"""Small file and text helpers shared by the core: atomic writes, plain-text tables, and where SEER keeps a
datastore's state."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def write_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to a temp file beside `path`, fsync it, then rename over `path` (the caller holds the lock).

    A crash before the rename leaves the previous file untouched; the stray temp file is ignored by readers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as fp:
        fp.write(payload)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def append_durably(path: str | os.PathLike, line: bytes) -> int:
    """Append one line to `path` with one write + fsync (the caller holds the file's lock); the file's size after.
    A line a crashed writer left unfinished is kept apart: the new line starts on a line of its own."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
        return size + len(line)
    finally:
        os.close(fd)


def text_table(rows: list[dict], columns: list[str] | list[tuple[str, str]]) -> str:
    """Rows as an aligned plain-text table. columns: keys, or (key, title) pairs; floats to 3 decimals, None as -."""
    pairs = [c if isinstance(c, tuple) else (c, c) for c in columns]
    cells = [[_cell(row.get(key)) for key, _ in pairs] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (_, title) in enumerate(pairs)]
    lines = ["  ".join(title.ljust(w) for (_, title), w in zip(pairs, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def datastore_state_dir(studies: str, local_root: str | os.PathLike | None = None) -> Path:
    """Where SEER keeps a datastore's state: <folder>/.seer for a local studies folder (`local_root`), else a folder
    of the user cache named after the DICOMweb URL."""
    if local_root:
        return Path(local_root) / ".seer"
    slug = "".join(ch if ch.isalnum() else "_" for ch in studies)[-80:]
    return user_cache_dir() / "datastores" / slug


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seer-label"
