"""The shared state database: an SQLAlchemy engine (`open_engine`, which the study state uses too), the schema of the
trace log, skill rounds, label ids and proposals, and `serialized`, which makes one kind of write happen one at a
time across every server.

Both dialects run the same statements; only the auto-increment key and the binary type differ in the schema.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from seer.errors import SeerError, StateUnavailable


def open_engine(url: str):
    """An SQLAlchemy engine for `url`; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE transactions (so a
    transaction that will write takes the write lock first instead of failing to upgrade later)."""
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN below, not pysqlite
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection):
            # a read (StudyState._reader) reads a WAL snapshot and never waits for the write lock
            read_only = connection.get_execution_options().get("seer_read_only")
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)

    @event.listens_for(engine, "handle_error")
    def _unreachable(context):
        # a server that is down or went away: one sentence and 503 instead of a driver traceback
        original = context.original_exception
        if context.is_disconnect or "connection" in str(original).lower() and "refused" in str(original).lower():
            error = StateUnavailable(
                f"The state database {display_url(url)} cannot be reached ({short_error(original)}); nothing was "
                "changed: try again when it is back."
            )
            error.reason = short_error(original)
            raise error from None

    return engine


def display_url(url: str) -> str:
    """The URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def short_error(exc: BaseException) -> str:
    """The first line of an error (the driver's own message for a database error), at most 200 characters."""
    if getattr(exc, "reason", None):
        return exc.reason
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _schema(dialect: str) -> list[str]:
    serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    binary = "BYTEA" if dialect == "postgresql" else "BLOB"
    return [
        # one row per trace-log row, in log order (`seq`); `body` is the row as JSON
        f"""CREATE TABLE IF NOT EXISTS seer_trace_rows (
            seq {serial},
            kind TEXT NOT NULL,
            row_id TEXT,
            trace_id TEXT,
            study TEXT,
            ts DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS seer_trace_rows_study ON seer_trace_rows (study, seq) WHERE kind = 'trace'",
        # a proposal is rewarded once, whichever server sees the save; a trace is logged once (migration re-runs)
        "CREATE UNIQUE INDEX IF NOT EXISTS seer_trace_rows_one_reward ON seer_trace_rows (trace_id) "
        "WHERE kind = 'reward'",
        "CREATE UNIQUE INDEX IF NOT EXISTS seer_trace_rows_one_trace ON seer_trace_rows (row_id) WHERE kind = 'trace'",
        """CREATE TABLE IF NOT EXISTS seer_skill_rounds (
            round INTEGER PRIMARY KEY,
            bank TEXT NOT NULL,
            report TEXT NOT NULL,
            closed_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS seer_label_ids (
            registry TEXT NOT NULL,
            name TEXT NOT NULL,
            id INTEGER NOT NULL,
            PRIMARY KEY (registry, name)
        )""",
        f"""CREATE TABLE IF NOT EXISTS seer_proposals (
            trace_id TEXT PRIMARY KEY,
            study TEXT,
            mask {binary} NOT NULL,
            bytes INTEGER NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS seer_imports (
            source TEXT PRIMARY KEY,
            imported_at DOUBLE PRECISION NOT NULL,
            report TEXT NOT NULL
        )""",
    ]


# keys of PostgreSQL's transaction-level advisory locks, one per kind of serialized write
_LOCK_KEYS = {"trace_rows": 715_001, "skill_rounds": 715_002, "label_ids": 715_003}


class StateDatabase:
    """One engine and the schema, for every table of the shared state. Thread-safe (a connection pool)."""

    def __init__(self, url: str):
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        self.url = url
        self.text = text
        self._local_serial = {name: threading.Lock() for name in _LOCK_KEYS}
        try:
            self.engine = open_engine(url)
            self.reader = self.engine.execution_options(seer_read_only=True)
            with self.engine.begin() as conn:
                for statement in _schema(self.engine.dialect.name):
                    conn.execute(text(statement))
        except (SQLAlchemyError, OSError, ImportError, StateUnavailable) as exc:
            raise SeerError(
                f"The state database {display_url(url)} cannot be opened ({short_error(exc)}); check the `state_db` "
                "setting (a postgresql:// URL or sqlite:///path)."
            ) from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def shown(self) -> str:
        """The URL without its password."""
        return display_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """StateUnavailable unless the database answers."""
        self.value("SELECT 1")

    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        """A read in its own transaction: every row, as dicts."""
        with self.reader.begin() as conn:
            return [dict(row) for row in conn.execute(self.text(sql), params or {}).mappings()]

    def value(self, sql: str, params: dict | None = None):
        """The first column of the first row of a read, or None."""
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    @contextlib.contextmanager
    def serialized(self, name: str) -> Iterator:
        """A write transaction that no other transaction serialized under `name` runs beside, on any server:
        PostgreSQL's advisory lock held to the commit; SQLite's write lock (BEGIN IMMEDIATE) already does this.
        Trace rows appended this way commit in the order of their keys, so a reader that follows the log by key
        never steps over a row that commits later."""
        with self._local_serial[name], self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(self.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEYS[name]})
            yield conn

