"""A PostgreSQL server of Debian's `postgresql` package for tests and benchmarks: its own cluster in a folder, on a
free port of 127.0.0.1, started and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from pacs import free_port


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class PostgresServer:
    """A PostgreSQL server of Debian's `postgresql` package on 127.0.0.1: its own cluster in `folder` (run as the
    `postgres` user when we are root), started and stopped by PID; `start` after `stop` starts the same cluster on
    the same port again."""

    def __init__(self, folder: Path, fsync: bool = False):
        """fsync False (tests): commits are not flushed to disk, which is faster and safe for throw-away data; a
        benchmark passes True to time what a real server does."""
        self.fsync = fsync
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (sudo apt-get install postgresql)")
        self.bindir, self.folder, self.data = bindir, folder, folder / "data"
        folder.mkdir(parents=True, exist_ok=True)
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            import shutil

            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(folder, "postgres")
            folder.chmod(0o755)
            for parent in folder.parents:  # the postgres user must be able to reach the folder
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
        subprocess.run([*self.as_user, str(bindir / "initdb"), "-D", str(self.data), "-U", "seer", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://seer@127.0.0.1:{self.port}/postgres"
        self.process = None

    def start(self) -> PostgresServer:
        import sqlalchemy

        log = self.folder / "postgres.log"
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [*self.as_user, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h",
                 "127.0.0.1", "-k", str(self.folder), "-c", f"fsync={'on' if self.fsync else 'off'}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        engine = sqlalchemy.create_engine(self.url)
        deadline = time.time() + 60
        while True:
            try:
                with engine.connect():
                    break
            except sqlalchemy.exc.OperationalError:
                if self.process.poll() is not None or time.time() > deadline:
                    code = self.process.poll()
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start (exit {code}); see {log}") from None
                time.sleep(0.3)
        engine.dispose()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import uuid

        import sqlalchemy

        name = "seer_" + uuid.uuid4().hex[:10]
        admin = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name
