"""The trace log's history after rotation: every reader that looks back at requests (GET /seer/trace, the SEG's
content description, active learning's campaign and phrasings) reads the archives too, newest first, and reads
only as far back as it needs."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest

import seer.loop.trace_log as trace_log_module
from seer.active_learning.scoring import campaign_from_traces, trace_requests_by_target
from seer.active_learning.strategy import ActiveLearning, recent_traces
from seer.loop.rewards import TraceLedger
from seer.loop.trace_log import TraceLog

from conftest import REPO

TARGETS = [{"id": 5, "name": "liver"}, {"id": 1, "name": "spleen"}, {"id": 3, "name": "kidney_left"}]
PADDING = "x" * 400


def trace(i: int, **extra) -> dict:
    target = TARGETS[i % 3] if i >= 12 else TARGETS[0]  # the first twelve requests are for the liver,
    target = {"id": 7, "name": "pancreas"} if i == 4 else target  # but one, on s0
    return {"type": "trace", "id": f"t{i}", "study": f"s{i % 4}", "request": f"request {i}",
            "request_clean": f"request {i}", "target": target, "target_phrase": target["name"],
            "proposal": f"/p/{i}.nii.gz", "rationale": PADDING, **extra}


def rotated_log(tmp_path, n: int = 40) -> TraceLog:
    """A ~10 kB log after `n` requests: every fourth proposal still waits for its reward (kept live, carried over
    by each rotation), the others are rewarded."""
    log = TraceLog(tmp_path / "traces.jsonl", max_mb=0.01)
    for i in range(n):
        log.append(trace(i))
        if i % 4 != 3:
            log.append({"type": "reward", "trace_id": f"t{i}", "study": f"s{i % 4}", "dice": 0.9})
    assert len(log.archives()) >= 2, "the log did not rotate twice"
    live_ids = [r.get("id") for r in log.read() if r.get("type") == "trace"]
    assert not {"t0", "t1", "t4"} & set(live_ids)  # the oldest rewarded traces are only in archives
    return log


def test_history_reads_the_archives_newest_first_each_trace_once(tmp_path):
    log = rotated_log(tmp_path)
    ids = [r["id"] for r in log.history()]
    assert ids == [f"t{i}" for i in reversed(range(40))]  # carried-over copies are not read twice or out of place
    ledger = TraceLedger(log)
    ledger.refresh()
    assert set(ids) == set(ledger.traces)  # the same history the reward ledger reads
    assert [r["id"] for r in log.history("s1")] == [f"t{i}" for i in reversed(range(40)) if i % 4 == 1]
    assert [r["id"] for r in log.history(limit=3)] == ["t39", "t38", "t37"]
    assert [r["id"] for r in log.history("s2", limit=50)][-1] == "t2"
    assert [log.count(f"s{k}") for k in range(4)] == [10, 10, 10, 10] and log.count("nowhere") == 0
    log.append(trace(40))  # counts follow the live file
    assert log.count("s0") == 11 and next(log.history("s0"))["id"] == "t40"


def test_history_reads_only_what_the_newest_rows_need(tmp_path, monkeypatch):
    """Asking for the newest rows reads the end of the live file, and no archive, when the live file holds them; a
    study's history skips the archives whose index says they hold none of its traces."""
    log = rotated_log(tmp_path)
    for i in range(40, 60):  # live rows that are not carried over (no proposal: nothing waits for a reward)
        log.append({**trace(i), "proposal": None, "rationale": "short"})
    parsed = []
    real_parse = trace_log_module._parse_line
    monkeypatch.setattr(trace_log_module, "_parse_line", lambda line: parsed.append(line) or real_parse(line))
    monkeypatch.setattr(trace_log_module, "_BLOCK", 256)
    opened = []
    real_open = trace_log_module.gzip.open
    monkeypatch.setattr(trace_log_module.gzip, "open", lambda path, *a, **k: opened.append(path) or
                        real_open(path, *a, **k))
    live_lines = log.path.read_bytes().count(b"\n")
    assert [r["id"] for r in log.history(limit=3)] == ["t59", "t58", "t57"]
    assert opened == [] and len(parsed) <= 4 < live_lines  # three rows (and a part of a fourth block)
    live = [r["id"] for r in log.read() if r.get("type") == "trace" and not r.get("carried")]
    older = [r["id"] for r in log.history(limit=len(live) + 1)]
    assert older[:-1] == live[::-1] and older[-1] not in live
    assert opened == [log.archives()[-1]]  # one row older than the live file: only the newest archive was read

    opened.clear()
    assert log.count("s1") == 15  # indexes every archive once
    opened.clear()
    log.append({**trace(60), "study": "only-live", "proposal": None})
    assert [r["id"] for r in log.history("only-live")] == ["t60"] and opened == []
    assert len(list(log.history("s1"))) == 15 and len(opened) == len(log.archives())


def test_active_learning_reads_the_campaign_and_phrasings_from_the_archives(tmp_path):
    log = rotated_log(tmp_path)
    rows = recent_traces(log)
    assert len(rows) == 40 and rows[0]["id"] == "t39" and "rationale" not in rows[0]
    assert campaign_from_traces(rows) == ["liver", "kidney_left", "spleen"]  # the liver requests were rotated out
    assert "request 0" in trace_requests_by_target(rows)[5]  # the oldest phrasing of the liver is still known
    assert [r["id"] for r in recent_traces(log, limit=2)] == ["t39", "t38"]
    learning = ActiveLearning(None, None, list_studies=lambda: ({}, []), load_volume=lambda s: None,
                              trace_rows=lambda: recent_traces(log))
    assert learning.campaign() == (["liver", "kidney_left", "spleen"], "most frequent targets in the trace log")


@pytest.fixture(scope="module")
def app_class():
    """SEERApp from apps/seer/main.py (its readers are called on a stand-in holding only the trace log)."""
    sys.path.insert(0, str(REPO / "apps" / "seer"))
    try:
        module = importlib.import_module("main")
        if not hasattr(module, "SEERApp"):  # the repository's main.py was imported first
            sys.modules.pop("main")
            module = importlib.import_module("main")
        yield module.SEERApp
    finally:
        sys.path.remove(str(REPO / "apps" / "seer"))
        sys.modules.pop("main", None)


def test_the_servers_readers_see_the_archives(tmp_path, app_class):
    import threading

    log = rotated_log(tmp_path)
    app = SimpleNamespace(pipeline=SimpleNamespace(trace_log=log), _trace_cache={}, _trace_lock=threading.Lock())
    rows, count = app_class.trace_rows(app, "s0", 100)  # GET /seer/trace/s0?limit=100
    assert count == 10 and [r["id"] for r in rows] == [f"t{i}" for i in range(36, -1, -4)]
    rows, count = app_class.trace_rows(app, "s0", 2)
    assert count == 10 and [r["id"] for r in rows] == ["t36", "t32"]
    # the SEG's content description: the newest trace of each target on the study, however old
    found = app_class._traces_for_label(app, "s0", {5: "liver", 7: "pancreas", 9: "never asked"})
    assert [{k: t[k] for k in ("id", "request", "target")} for t in found] == [
        {"id": "t36", "request": "request 36", "target": "liver"},
        {"id": "t4", "request": "request 4", "target": "pancreas"},
    ]
    recent = app_class.recent_traces(app)  # active learning's campaign and phrasings
    assert len(recent) == 40 and recent[-1]["id"] == "t0"
    assert app_class.recent_traces(app) is recent  # cached while the log is unchanged
    log.append(trace(40))
    assert app_class.recent_traces(app)[0]["id"] == "t40"
