"""Importing a server's state files into the shared state database, once per state folder: the trace log (archives
and live file, in log order), the skill rounds (only into a database without rounds) and the label-id registries.
The import is recorded in `seer_imports` under the folder's own id (`<state>/folder_id`, written once), so a second
start imports nothing, even from a container with another host name or the folder mounted elsewhere; a trace or
reward the database holds already is never added twice.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path

from filelock import FileLock

from seer.files import write_atomic
from seer.loop.trace_log import TraceLog
from seer.reasoning.skills import SkillBank
from seer.state_db.database import StateDatabase
from seer.state_db.label_id_table import DatabaseLabelRegistry
from seer.state_db.trace_table import DatabaseTraceLog

logger = logging.getLogger(__name__)

REGISTRIES = ("label_table", "voxtell_labels")  # <state>/<name>.json files and their registry names
_ROUND_FILE = re.compile(r"^round-(\d{4,})\.jsonl$")


def import_source(state_dir: Path) -> str:
    """The state folder's id, kept in the folder (`folder_id`, a UUID written atomically the first time)."""
    path = Path(state_dir) / "folder_id"
    with FileLock(str(path) + ".lock"):
        try:
            return "folder:" + path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            folder_id = uuid.uuid4().hex
            write_atomic(path, folder_id.encode())
            return "folder:" + folder_id


def import_state_files(db: StateDatabase, state_dir: str | Path) -> dict | None:
    """Import `state_dir`'s files unless done before; the report ({"traces", "rewards", "rows", "rounds",
    "labels", "label_conflicts"}) when this call imported, None when the folder was imported already or holds
    nothing to import."""
    state_dir = Path(state_dir)
    source = import_source(state_dir)
    if db.value("SELECT 1 FROM seer_imports WHERE source = :s", {"s": source}):
        return None
    log_path = state_dir / "traces.jsonl"
    round_files = sorted((state_dir / "skills").glob("round-*.jsonl")) if (state_dir / "skills").is_dir() else []
    registry_files = [state_dir / f"{name}.json" for name in REGISTRIES if (state_dir / f"{name}.json").is_file()]
    has_log = log_path.exists() or any(state_dir.glob("traces.jsonl.*.gz"))
    if not (has_log or round_files or registry_files):
        _record(db, source, {"empty": True})
        return None
    report: dict = {"rows": 0, "traces": 0, "rewards": 0, "rounds": 0, "labels": 0, "label_conflicts": []}
    if has_log:
        rows = TraceLog(log_path).read_all()
        added = DatabaseTraceLog(db).import_rows([{k: v for k, v in r.items() if k != "carried"} for r in rows])
        report["rows"] = added
        report["traces"] = sum(1 for r in rows if r.get("type", "trace") == "trace" and not r.get("carried"))
        report["rewards"] = sum(1 for r in rows if r.get("type") == "reward")
    report["rounds"] = _import_rounds(db, state_dir / "skills", round_files)
    for path in registry_files:
        try:
            ids = {str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).get("labels", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("label registry %s unreadable (%s): not imported", path, exc)
            continue
        added, conflicts = DatabaseLabelRegistry(db, path.stem).import_ids(ids)
        report["labels"] += added
        report["label_conflicts"] += conflicts
    _record(db, source, report)
    logger.warning(
        "state files of %s imported into the state database %s: %d trace-log rows (%d traces, %d rewards), %d skill "
        "rounds, %d label ids%s; the files are kept but no longer read", state_dir, db.shown, report["rows"],
        report["traces"], report["rewards"], report["rounds"], report["labels"],
        f"; {len(report['label_conflicts'])} names have another id here than in that folder's file"
        if report["label_conflicts"] else "")
    return report


def _import_rounds(db: StateDatabase, folder: Path, files: list[Path]) -> int:
    """Every round file into a database that has no round yet; 0 (with a warning) when it has some."""
    numbers = sorted(int(m.group(1)) for f in files if (m := _ROUND_FILE.match(f.name)))
    if not numbers:
        return 0
    with db.serialized("skill_rounds") as conn:
        if conn.execute(db.text("SELECT COUNT(*) FROM seer_skill_rounds")).scalar():
            logger.warning("skill rounds of %s not imported: the state database has rounds already, which stay in "
                           "use", folder)
            return 0
        for number in numbers:
            bank = SkillBank.load(folder / f"round-{number:04d}.jsonl")
            try:
                report = (folder / f"round-{number:04d}.json").read_text(encoding="utf-8")
            except OSError:
                report = json.dumps({"round": number})
            conn.execute(db.text("INSERT INTO seer_skill_rounds (round, bank, report, closed_at) VALUES (:n, :bank, "
                                 ":report, :now)"),
                         {"n": number, "bank": bank.payload().decode("utf-8"), "report": report, "now": time.time()})
    return len(numbers)


def _record(db: StateDatabase, source: str, report: dict) -> None:
    with db.engine.begin() as conn:
        conn.execute(db.text("INSERT INTO seer_imports (source, imported_at, report) VALUES (:s, :now, :report) "
                             "ON CONFLICT (source) DO NOTHING"),
                     {"s": source, "now": time.time(), "report": json.dumps(report)})
