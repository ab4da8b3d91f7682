"""The shared state database: an SQLAlchemy engine (`open_engine`, which the study state uses too), the schema of the
trace log, skill rounds, label ids and proposals, and `serialized`, which makes one kind of write happen one at a
time across every server.

Both dialects run the same statements; only the auto-increment key and the binary type differ in the schema.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from seer.errors import SeerError, StateUnavailable


def open_engine(url: str):
    """An SQLAlchemy engine for `url`; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE transactions (so a
    transaction that will write takes the write lock first instead of failing to upgrade later)."""
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _report_unreachable(engine, url)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN below, not pysqlite
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection):
            # a read (Database.reader) reads a WAL snapshot and never waits for the write lock
            read_only = connection.get_execution_options().get("seer_read_only")
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # a server that does not answer is given up after 5 s (not the driver's minutes); 4 + 8 connections per engine,
    # three engines per app server (shared state, study state, review reads): 36 of PostgreSQL's default 100
    engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8, pool_timeout=30,
                           connect_args={"connect_timeout": 5})
    _report_unreachable(engine, url)
    return engine


# SQLSTATE of a server that went away, is starting or stopping, or has no connection left (class 08: connection
# exceptions; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now; 53300: too many connections)
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300")
_SQLITE_UNREACHABLE = ("database is locked", "unable to open database file", "disk i/o error", "readonly database")


def _report_unreachable(engine, url: str) -> None:
    """A database that cannot be reached becomes StateUnavailable (503) with one sentence naming it, not a driver
    traceback: a dropped or refused connection, one that cannot be made, a server starting or stopping or out of
    connections; for SQLite a lock held past the busy timeout or a file that cannot be opened or written."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    @event.listens_for(engine, "handle_error")
    def _unreachable(context):
        original = context.original_exception
        state = str(getattr(original, "sqlstate", None) or "")
        text = str(original).lower()
        if engine.dialect.name == "sqlite":
            unreachable = any(marker in text for marker in _SQLITE_UNREACHABLE)
        else:
            unreachable = (context.is_disconnect or state.startswith("08") or state in _UNREACHABLE_STATES
                           or (isinstance(context.sqlalchemy_exception, OperationalError) and not state))
        if unreachable:
            error = StateUnavailable(
                f"The state database {display_url(url)} cannot be reached ({short_error(original)}); nothing was "
                "changed: try again when it is back."
            )
            error.reason = short_error(original)
            raise error from None


def state_url(url: str | None, state_dir) -> str:
    """`url` (the `state_db` setting), else SQLite at `<state_dir>/state.db` (the folder is made)."""
    if url:
        return url
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir / 'state.db'}"


def create_schema(engine, statements: list[str]) -> None:
    """Run `CREATE ... IF NOT EXISTS` statements in one transaction. On PostgreSQL two servers starting at once
    would race on them (one fails with "duplicate key" on the catalog); an advisory lock makes them take turns."""
    from sqlalchemy import text

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(715000)"))
        for statement in statements:
            conn.execute(text(statement))


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


class Database:
    """An engine on `url` with the tables of `schema` created (its statements, or a function of the dialect's name
    giving them): what the shared state, the study state and the review reads each open. Reads run in a read-only
    transaction (on SQLite a WAL snapshot that never waits for the write lock); a database that cannot be opened is
    one sentence. Thread-safe (a connection pool)."""

    def __init__(self, url: str, schema: list[str] | Callable[[str], list[str]]):
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        self.url = url
        self.text = text
        try:
            self.engine = open_engine(url)
            self.reader = self.engine.execution_options(seer_read_only=True)
            create_schema(self.engine, schema(self.engine.dialect.name) if callable(schema) else schema)
        except (SQLAlchemyError, OSError, ImportError, StateUnavailable) as exc:
            raise SeerError(
                f"The state database {display_url(url)} cannot be opened ({short_error(exc)}); check the `state_db` "
                "setting (a postgresql:// URL, or sqlite:///path in a writable folder)."
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

    # Statements run and their results are fetched inside one transaction; none of these returns a live result
    # (one read after the connection went back to the pool would race the thread that uses it next).
    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        """A read in its own transaction: every row, as dicts."""
        with self.reader.begin() as conn:
            return [dict(row) for row in conn.execute(self.text(sql), params or {}).mappings()]

    def row(self, sql: str, params: dict | None = None) -> dict | None:
        """The first row of a read, or None."""
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: dict | None = None):
        """The first column of the first row of a read, or None."""
        row = self.row(sql, params)
        return next(iter(row.values())) if row else None

    def execute(self, sql: str, params: list[dict] | dict | None = None) -> int:
        """A write in its own transaction (one parameter set, or many): the number of rows it changed."""
        with self.engine.begin() as conn:
            return conn.execute(self.text(sql), params or {}).rowcount


class StateDatabase(Database):
    """The shared state's tables: trace log, proposals, skill rounds, label ids, imports."""

    def __init__(self, url: str):
        self._local_serial = {name: threading.Lock() for name in _LOCK_KEYS}
        super().__init__(url, _schema)

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

