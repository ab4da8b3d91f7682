"""Helpers shared by the benchmark scripts (paths, timing, tables)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(os.environ.get("SEER_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DATA = REPO / "sample-data"
RESULTS = REPO / "bench" / "results"


def need_shared_data() -> Path:
    if not (SHARED_DATA / "ct-abdomen-pelvis").exists():
        raise SystemExit(f"benchmark needs the real volumes in {SHARED_DATA}")
    return SHARED_DATA


def need_sample_data() -> Path:
    from seer import sample_data

    if not sample_data.is_complete(SAMPLE_DATA):
        sample_data.build(SAMPLE_DATA)
    return SAMPLE_DATA


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(rows: list[dict], columns: list[str]) -> str:
    from seer.files import text_table

    return text_table(rows, columns)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`main.py serve` on a free port (a context manager): .url, .pid; stopped by process group on exit."""

    def __init__(self, studies: Path | str, conf: dict, log: Path, timeout_s: float = 600, env: dict | None = None):
        self.studies, self.conf, self.log, self.timeout_s = studies, conf, log, timeout_s
        self.env = env or {}

    def __enter__(self):
        import subprocess

        import requests

        port = free_port()
        args = [sys.executable, str(REPO / "main.py"), "serve", "--studies", str(self.studies), "--port", str(port)]
        for key, value in self.conf.items():
            args += ["--conf", key, str(value)]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=dict(os.environ, HF_HUB_OFFLINE="1", **self.env))
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit(f"server did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc):
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass

    def rss_mib(self) -> float:
        """Resident memory of the server process and its children (MiB)."""
        import psutil

        process = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
