"""The trace log, rewards and skill rounds in the shared state database against the files, in one run, at 10,000
and 100,000 trace-log rows: SQLite (`state_db sqlite:///...`) and PostgreSQL (Debian's server started here on
127.0.0.1, fsync on) against the file log (`.seer/traces.jsonl` with fsync) as the baseline.

For each back end and size, after filling the log with that many rows (traces over 500 studies, a reward for one
in five; filling is not timed):
- append: one trace row with a 64 KiB proposal mask (what every inference writes), mean of 200;
- reward: one reward through the reward ledger (refresh, the exactly-once check, append, refresh), mean of 200;
- history: the newest 10 traces of one study and the study's trace count (GET /seer/trace), mean of 200;
- round close: one skill round of 20 rewards (evolution plus storage), mean of 5;
- first read: a new ledger reading the whole log (a server's start), once.
Database round trips per operation are counted at the SQLAlchemy engine.

Per inference on a real server (PostgreSQL only): one server with `state_db` on the upper-abdomen CT slab, offline
reasoner and atlas backbone; after one warm-up, 20 inferences one after another. The database's committed
transactions (pg_stat_database) over those 20 inferences, per inference; the server's background scans run too,
so the figure is an upper bound.

Run: python bench/bench_state_db.py [--sizes 10000,100000] [--no-postgresql] [--no-server]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _util import REPO, SHARED_DATA, Server, save, table

sys.path.insert(0, str(REPO / "tests"))

from seer.loop.rewards import TraceLedger  # noqa: E402
from seer.loop.skill_rounds import SkillRounds  # noqa: E402
from seer.loop.trace_log import TraceLog  # noqa: E402
from seer.reasoning.skills import RewardedTrace  # noqa: E402
from seer.state_db.database import StateDatabase  # noqa: E402
from seer.state_db.skill_round_table import DatabaseSkillRounds  # noqa: E402
from seer.state_db.trace_table import DatabaseTraceLog  # noqa: E402

STUDIES = 500
ROUND = 20


def trace_row(i: int, proposal: str) -> dict:
    return {"type": "trace", "id": f"t{i}", "study": f"study{i % STUDIES}", "request": f"left kidney please {i}",
            "request_clean": f"left kidney please {i}", "style": "abbr_or_short", "answer": "Segment the left kidney.",
            "evidence": "CT, abdomen; kidneys in view. " * 4, "rationale": "The request names the left kidney. " * 3,
            "format_valid": True, "skill_ids": ["s1", "s2"], "reasoner": "offline", "vis_cue": "ABDOMINAL_ORGANS",
            "target": {"id": 3, "name": "kidney_left", "method": "lexicon"}, "target_phrase": "left kidney",
            "proposal": proposal, "voxels": 1234, "latencies": {"reason_s": 0.002, "backbone_s": 1.2}}


def reward_row(i: int) -> dict:
    return {"type": "reward", "trace_id": f"t{i}", "study": f"study{i % STUDIES}", "dice": 0.9, "raw_dice": 0.1,
            "gain": 0.8, "request": f"lt kidney {i}", "request_clean": f"lt kidney {i}", "answer": "Segment it.",
            "target": {"id": 3, "name": "kidney_left"}, "target_phrase": "left kidney", "style": "abbr_or_short",
            "vis_cue": "ABDOMINAL_ORGANS", "format_valid": True, "credited": [], "skill_ids": [], "dataset": "bench"}


def fill_rows(n: int, proposal: str) -> list[dict]:
    """n rows: traces, with a reward row after every fifth trace."""
    rows, i = [], 0
    while len(rows) < n:
        rows.append({"ts": time.time(), **trace_row(i, proposal)})
        if i % 5 == 0 and len(rows) < n:
            rows.append({"ts": time.time(), **reward_row(i)})
        i += 1
    return rows


class Counter:
    """Statements sent to the database (round trips), counted at the engine."""

    def __init__(self, db: StateDatabase | None):
        self.n = 0
        if db is not None:
            from sqlalchemy import event

            event.listen(db.engine, "before_cursor_execute", self._count)

    def _count(self, *args):
        self.n += 1


def fill(kind: str, where: Path, url: str | None, rows: list[dict]):
    """A log of `kind` holding `rows`, written directly (bulk), and its state database (None for files)."""
    if kind == "files":
        where.mkdir(parents=True, exist_ok=True)
        with open(where / "traces.jsonl", "wb") as fp:
            for row in rows:
                fp.write((json.dumps(row) + "\n").encode())
        return TraceLog(where / "traces.jsonl", max_mb=1e6), None
    db = StateDatabase(url)
    params = [{"kind": r["type"], "row_id": r.get("id") if r["type"] == "trace" else None,
               "trace_id": r.get("trace_id"), "study": r.get("study"), "ts": r["ts"], "body": json.dumps(r)}
              for r in rows]
    with db.engine.begin() as conn:
        for start in range(0, len(params), 5000):
            conn.execute(db.text("INSERT INTO seer_trace_rows (kind, row_id, trace_id, study, ts, body) VALUES "
                                 "(:kind, :row_id, :trace_id, :study, :ts, :body)"), params[start:start + 5000])
    return DatabaseTraceLog(db), db


def rounds_for(kind: str, where: Path, db):
    if kind == "files":
        return SkillRounds(where, round_size=ROUND, dataset="bench")
    return DatabaseSkillRounds(db, where, round_size=ROUND, dataset="bench")


def rewarded(i: int) -> RewardedTrace:
    return RewardedTrace(trace_id=f"r{i}", study=f"study{i % STUDIES}", request=f"lt kidney {i % 7}",
                         answer="Segment the left kidney.", target="left kidney", style="abbr_or_short",
                         vis_cue="ABDOMINAL_ORGANS", format_valid=True, credited=(), dice=0.9, raw_dice=0.1,
                         dataset="bench")


def measure(kind: str, where: Path, url: str | None, size: int, mask: Path) -> dict:
    rows = fill_rows(size, str(mask))
    log, db = fill(kind, where, url, rows)
    counter = Counter(db)
    out = {"backend": kind, "rows": size}

    def timed(fn, repeats: int) -> tuple[float, float]:
        before, started = counter.n, time.perf_counter()
        for k in range(repeats):
            fn(k)
        return (time.perf_counter() - started) / repeats * 1000, (counter.n - before) / repeats

    started = time.perf_counter()
    ledger = TraceLedger(log)
    ledger.refresh()
    out["first read ms"] = (time.perf_counter() - started) * 1000
    base = 10**7
    out["append ms"], out["append trips"] = timed(lambda k: log.append(trace_row(base + k, str(mask))), 200)
    pending = [f"t{base + k}" for k in range(200)]
    out["reward ms"], out["reward trips"] = timed(
        lambda k: ledger.append({**reward_row(0), "trace_id": pending[k]}), 200)
    out["history ms"], out["history trips"] = timed(
        lambda k: (list(log.history(f"study{k % STUDIES}", 10)), log.count(f"study{k % STUDIES}")), 200)
    rounds = rounds_for(kind, where, db)
    rewards = [rewarded(i) for i in range(ROUND * 6)]
    closes = []
    trips = []
    for n in range(1, 6):
        before, started = counter.n, time.perf_counter()
        rounds.close_due(rewards[: ROUND * n])
        closes.append((time.perf_counter() - started) * 1000)
        trips.append(counter.n - before)
    out["round close ms"], out["round trips"] = statistics.mean(closes), statistics.mean(trips)
    if db is not None:
        db.close()
    return out


def per_inference(root: Path, server, inferences: int = 20) -> dict:
    """Transactions the database committed per inference on a real server (see the module docstring)."""
    import shutil

    import requests
    import sqlalchemy

    studies = root / "studies"
    studies.mkdir(parents=True)
    shutil.copy(SHARED_DATA / "ct-abdomen-small" / "image.nii.gz", studies / "ct_small.nii.gz")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(SHARED_DATA / "ct-abdomen-pelvis")
    url = server.new_database()
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)

    def commits() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").scalar())

    with Server(studies, {"atlases": atlases, "state_db": url}, root / "server.log") as app:
        def infer(prompt):
            reply = requests.post(f"{app.url}/infer/seer", params={"image": "ct_small", "output": "json"},
                                  data={"params": json.dumps({"prompt": prompt})}, timeout=600)
            assert reply.status_code == 200, reply.text
        infer("liver")  # the cold one: registration
        time.sleep(1.0)  # pg_stat_database is updated when a backend reports (at most every 0.5-1 s)
        before, started = commits(), time.perf_counter()
        for k in range(inferences):
            infer(["liver", "spleen", "left kidney", "right kidney"][k % 4])
        seconds = time.perf_counter() - started
        time.sleep(1.5)
        after = commits()
    engine.dispose()
    return {"inferences": inferences, "transactions": after - before - 2, "seconds": seconds,
            "per inference": (after - before - 2) / inferences}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="trace-log rows, comma-separated (10000,100000)")
    parser.add_argument("--no-postgresql", action="store_true", help="files and SQLite only")
    parser.add_argument("--no-server", action="store_true", help="skip the per-inference count on a real server")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench-state-db-"))
    mask = root / "proposal.nii.gz"
    mask.write_bytes(uuid.uuid4().bytes * 4096)  # 64 KiB, incompressible like a gzip mask
    server = None
    if not args.no_postgresql:
        from postgres import PostgresServer, postgres_bin

        if postgres_bin() is None:
            parser.error("PostgreSQL is not installed (apt-get install postgresql); pass --no-postgresql")
        server = PostgresServer(root / "postgres", fsync=True).start()
    results = []
    try:
        for size in sizes:
            for kind in ["files", "sqlite"] + ([] if server is None else ["postgresql"]):
                print(f"{kind}, {size} rows ...", flush=True)
                where = root / f"{kind}-{size}" / ".seer"
                where.mkdir(parents=True)
                url = {"files": None, "sqlite": f"sqlite:///{where / 'state.db'}",
                       "postgresql": server.new_database() if server else None}[kind]
                results.append(measure(kind, where, url, size, mask))
        inference = None
        if server is not None and not args.no_server:
            print("per inference on a real server ...", flush=True)
            inference = per_inference(root / "server", server)
    finally:
        if server is not None:
            server.stop()
    columns = ["backend", "rows", "append ms", "append trips", "reward ms", "reward trips", "history ms",
               "history trips", "round close ms", "round trips", "first read ms"]
    print(table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in results], columns))
    print("\nratios to the file log at the same size:")
    for r in results:
        if r["backend"] == "files":
            continue
        base = next(b for b in results if b["backend"] == "files" and b["rows"] == r["rows"])
        print(f"  {r['backend']:>10} {r['rows']:>7} rows: " + ", ".join(
            f"{name} {r[name + ' ms'] / base[name + ' ms']:.2f}x" for name in
            ("append", "reward", "history", "round close", "first read")))
    if inference:
        print(f"\nper inference, one server on PostgreSQL: {inference['transactions']} transactions over "
              f"{inference['inferences']} warm inferences ({inference['per inference']:.1f} each, background scans "
              f"included), {inference['seconds'] / inference['inferences'] * 1000:.0f} ms per inference")
    save("state_db", {"results": results, "per_inference": inference})
    return 0


if __name__ == "__main__":
    sys.exit(main())
