"""The shared state database (seer.state_db) over both back ends, SQLite and PostgreSQL: the trace log with its
rewards and proposal masks, skill rounds, label ids and the one-time import of a server's files. Two objects on
one database stand for two servers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from seer.loop.rewards import TraceLedger
from seer.loop.skill_rounds import SkillRounds
from seer.loop.state_import import import_state_files
from seer.loop.trace_log import TraceLog
from seer.reasoning.skills import RewardedTrace, SkillBank
from seer.segmentation.atlases import LabelRegistry
from seer.state_db.database import StateDatabase
from seer.state_db.label_id_table import DatabaseLabelRegistry
from seer.state_db.skill_round_table import DatabaseSkillRounds
from seer.state_db.trace_table import DatabaseTraceLog

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def state_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("fresh_postgres")


def _db(url: str) -> StateDatabase:
    return StateDatabase(url)


def _trace(i: int, study: str = "s", proposal: str | None = None) -> dict:
    return {"type": "trace", "id": f"t{i}", "study": study, "request": f"lt kidney {i}",
            "target": {"id": 1, "name": "kidney_left"}, "proposal": proposal or f"/nowhere/p{i}.nii.gz"}


def _reward(i: int) -> dict:
    return {"type": "reward", "trace_id": f"t{i}", "study": "s", "dice": 0.8, "raw_dice": 0.1, "gain": 0.7,
            "request_clean": f"lt kidney {i}", "answer": "Segment the left kidney.", "target_phrase": "left kidney",
            "style": "abbr_or_short", "vis_cue": "ABDOMINAL_ORGANS", "format_valid": True, "dataset": "ds"}


def _rewarded(i: int) -> RewardedTrace:
    return RewardedTrace(trace_id=f"t{i}", study="s", request=f"lt kidney {i}", answer="Segment the left kidney.",
                         target="left kidney", style="abbr_or_short", vis_cue="ABDOMINAL_ORGANS", format_valid=True,
                         credited=(), dice=0.9, raw_dice=0.0, dataset="ds")


# -- trace log -------------------------------------------------------------------------------------------------------
def test_trace_rows_read_back_newest_first_and_counted_per_study(state_url):
    log = DatabaseTraceLog(_db(state_url))
    for i in range(7):
        log.append(_trace(i, study="a" if i % 2 else "b"))
    assert [r["id"] for r in log.history("a")] == ["t5", "t3", "t1"]
    assert [r["id"] for r in log.history(limit=2)] == ["t6", "t5"]
    assert (log.count("a"), log.count("b"), log.count("c")) == (3, 4, 0)
    assert log.append(_trace(3)) is None  # a trace id is logged once
    before = log.stamp()
    log.append(_trace(9))
    assert log.stamp() != before


def test_two_servers_reward_one_proposal_once(state_url):
    """Both ledgers see the same save: the first reward row stands, the second is refused by the database."""
    one, two = DatabaseTraceLog(_db(state_url)), DatabaseTraceLog(_db(state_url))
    one.append(_trace(1))
    first, second = TraceLedger(one), TraceLedger(two)
    assert [r["id"] for r in second.pending("s")] == ["t1"]  # server two sees server one's proposal
    assert first.pending("s") and second.pending("s")
    assert first.append(_reward(1)) is True
    assert second.append({**_reward(1), "dice": 0.2}) is False  # second's check ran before its refresh ...
    assert two.append({**_reward(1), "dice": 0.3}) is None  # ... and the database refuses it even unchecked
    assert second.pending("s") == [] and second.reward_count() == 1
    assert second.rewarded_traces()[0].dice == 0.8


def test_a_follower_misses_no_row_while_servers_append_at_once(state_url):
    """Four writers on two connections' worth of servers append 60 rows each while a follower reads: the follower
    ends with every row exactly once, in an order consistent with each writer's."""
    logs = [DatabaseTraceLog(_db(state_url)) for _ in range(2)]
    follower = DatabaseTraceLog(_db(state_url))
    seen: list[str] = []
    done = threading.Event()

    def write(w: int):
        for i in range(60):
            logs[w % 2].append({"type": "trace", "id": f"w{w}-{i}", "study": f"s{w}"})

    def follow():
        position = None
        while True:
            finished = done.is_set()
            rows, position, rotated = follower.read_since(position)
            assert not rotated
            seen.extend(r["id"] for r in rows)
            if finished:
                return

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert len(seen) == 240 and len(set(seen)) == 240
    for w in range(4):
        mine = [int(s.split("-")[1]) for s in seen if s.startswith(f"w{w}-")]
        assert mine == sorted(mine)


def test_a_proposal_mask_is_readable_by_a_server_that_never_had_the_file(state_url, tmp_path):
    mask = tmp_path / "proposal.nii.gz"
    mask.write_bytes(b"\x1f\x8b mask bytes")
    one, two = DatabaseTraceLog(_db(state_url)), DatabaseTraceLog(_db(state_url))
    row = one.append(_trace(1, proposal=str(mask)))
    mask.unlink()  # server two's machine has no such file
    with two.proposal_file(row) as path:
        assert path is not None and Path(path).read_bytes() == b"\x1f\x8b mask bytes"
    with two.proposal_file(_trace(2)) as path:
        assert path is None
    assert two.prune_proposals(keep={"t1"}, older_than_s=0, max_bytes=1e9) == 0  # still waiting for its reward
    assert two.prune_proposals(keep=set(), older_than_s=0, max_bytes=1e9) == 1
    with two.proposal_file(row) as path:
        assert path is None


# -- skill rounds ----------------------------------------------------------------------------------------------------
def test_a_round_closes_once_for_two_servers(state_url):
    one = DatabaseSkillRounds(_db(state_url), round_size=2)
    two = DatabaseSkillRounds(_db(state_url), round_size=2)
    assert one.rounds() == [0] and one.active()[0] == two.active()[0] == 0
    rewards = [_rewarded(i) for i in range(5)]
    results: list = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.close_due(rewards))) for r in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 2]  # one server closed rounds 1 and 2, the other found them
    assert one.rounds() == [0, 1, 2] and two.report(2)["reward_end"] == 4
    one._checked = two._checked = 0  # past the time each trusts its round (the one that did not close it looks again)
    assert one.active()[0] == two.active()[0] == 2
    assert one.active()[1].version == two.active()[1].version
    assert two.close_due(rewards) == []


def test_round_zero_is_seeded_once_and_cli_reading_needs_rounds(state_url, tmp_path):
    from seer.errors import BadRequest

    with pytest.raises(BadRequest, match="No skill rounds"):
        DatabaseSkillRounds(_db(state_url), create=False)
    bank = SkillBank.starter()
    rounds = DatabaseSkillRounds(_db(state_url), tmp_path / "state", seed=lambda: bank)
    assert rounds.active()[1].payload() == bank.payload()
    assert (tmp_path / "state" / "skills.jsonl").read_bytes() == bank.payload()  # the copy for file readers
    assert DatabaseSkillRounds(_db(state_url), create=False).rounds() == [0]


# -- label ids -------------------------------------------------------------------------------------------------------
def test_a_new_structure_gets_one_id_on_every_server(state_url):
    one = DatabaseLabelRegistry(_db(state_url), "label_table")
    two = DatabaseLabelRegistry(_db(state_url), "label_table")
    assert one.ensure(["liver"]) == {"liver": 1}
    assert two.ensure(["Liver", "spleen"]) == {"Liver": 1, "spleen": 2}  # the same structure, another spelling
    one._read_at = 0  # past the time it trusts what it read: its table shows the id server two gave
    assert one.table() == {1: "liver", 2: "spleen"}
    assert one.ensure(["spleen"]) == {"spleen": 2}
    names = [f"structure {chr(97 + i)}" for i in range(12)]
    got: dict = {}
    threads = [threading.Thread(target=lambda r=r, ns=ns: got.update({id(r): r.ensure(ns)}))
               for r, ns in ((one, names), (two, list(reversed(names))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[id(one)] == got[id(two)]
    assert len(set(got[id(one)].values())) == 12
    assert DatabaseLabelRegistry(_db(state_url), "voxtell_labels").ensure(["spleen"]) == {"spleen": 1}


# -- import of a server's files --------------------------------------------------------------------------------------
def _file_state(folder: Path) -> None:
    log = TraceLog(folder / "traces.jsonl")
    for i in range(4):
        log.append(_trace(i))
    log.append(_reward(0))
    log.append({"type": "reward_skipped", "trace_id": "t1", "study": "s", "reason": "why", "label_stamp": "x"})
    rounds = SkillRounds(folder, round_size=2)
    rounds.close_due([_rewarded(0), _rewarded(1)])
    registry = LabelRegistry(folder / "label_table.json")
    registry.ensure(["liver", "spleen"])


def test_a_servers_files_are_imported_once(state_url, tmp_path):
    folder = tmp_path / "one" / ".seer"
    _file_state(folder)
    report = import_state_files(_db(state_url), folder)
    assert report["traces"] == 4 and report["rewards"] == 1 and report["rows"] == 6
    assert report["rounds"] == 2 and report["labels"] == 2
    assert import_state_files(_db(state_url), folder) is None  # a second start imports nothing
    log = DatabaseTraceLog(_db(state_url))
    assert [r["id"] for r in log.history("s")] == ["t3", "t2", "t1", "t0"]
    ledger = TraceLedger(log)
    assert [p["id"] for p in ledger.pending("s", stamp="x")] == ["t2", "t3"]  # t0 rewarded; t1 skipped for "x"
    assert ledger.reward_count() == 1
    rounds = DatabaseSkillRounds(_db(state_url))
    assert rounds.active()[0] == 1
    assert rounds.active()[1].version == SkillRounds(folder).active()[1].version
    assert DatabaseLabelRegistry(_db(state_url), "label_table").ensure(["spleen", "kidney"]) == {"spleen": 2,
                                                                                                  "kidney": 3}
    # a second server's folder: its traces join, its rounds do not replace the database's, its ids keep theirs
    other = tmp_path / "two" / ".seer"
    TraceLog(other / "traces.jsonl").append(_trace(10))
    LabelRegistry(other / "label_table.json").ensure(["kidney", "pancreas"])
    report = import_state_files(_db(state_url), other)
    assert report["traces"] == 1 and report["rounds"] == 0
    # kidney is 1 in that file and 3 here: the database's id stands; pancreas's 2 is the spleen here: a new id
    assert report["label_conflicts"] == ["kidney", "pancreas"]
    assert DatabaseLabelRegistry(_db(state_url), "label_table").ensure(["pancreas"]) == {"pancreas": 4}
    assert log.count("s") == 5


# -- command line ----------------------------------------------------------------------------------------------------
def test_skills_and_traces_read_the_database_without_any_servers_disk(state_url, tmp_path):
    folder = tmp_path / ".seer"
    _file_state(folder)
    import_state_files(_db(state_url), folder)

    def run(*args):
        done = subprocess.run([sys.executable, str(REPO / "main.py"), *args, "--state-db", state_url, "--json"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    traces = run("traces")
    assert traces["round"] == 1 and traces["rewards"] == 1
    assert sorted(r["id"] for r in traces["traces"]) == ["t0", "t1", "t2", "t3"]
    assert run("skills", "list")["round"] == 1
    bad = subprocess.run([sys.executable, str(REPO / "main.py"), "traces", "--state-db", "mysql://x@y/z"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--state-db must be" in bad.stderr


def test_a_round_close_that_dies_midway_leaves_nothing_and_is_redone(state_url, monkeypatch):
    """The close is one transaction: a server killed while evolving round 2 of two leaves neither round; the next
    close (any server's) makes both, once."""
    import seer.reasoning.skills as table

    rounds = DatabaseSkillRounds(_db(state_url), round_size=2)
    real = table.evolve
    calls = []

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(table, "evolve", dies_on_the_second)
    rewards = [_rewarded(i) for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        rounds.close_due(rewards)
    other = DatabaseSkillRounds(_db(state_url), round_size=2)
    assert other.rounds() == [0]
    monkeypatch.setattr(table, "evolve", real)
    assert [r.round for r in other.close_due(rewards)] == [1, 2]
    assert other.rounds() == [0, 1, 2] and rounds.close_due(rewards) == []


def test_finetune_takes_traces_or_a_state_database_with_a_sentence_when_it_cannot(tmp_path, capsys):
    import main

    url = f"sqlite:///{tmp_path / 'state.db'}"
    out = tmp_path / "adapter"
    assert main.main(["finetune", "--model", "unused", "--output", str(out)]) == 2
    assert "--traces DIR_OR_JSONL" in capsys.readouterr().err
    assert main.main(["finetune", "--traces", "x", "--state-db", url, "--model", "unused", "--output", str(out)]) == 2
    assert "one of the two" in capsys.readouterr().err
    assert main.main(["finetune", "--state-db", url, "--model", "unused", "--output", str(out)]) == 2
    assert "No skill rounds in the state database" in capsys.readouterr().err  # no server ever used it
    DatabaseSkillRounds(_db(url))  # a server's start seeds round 0; nobody has saved a label yet
    assert main.main(["finetune", "--state-db", url, "--model", "unused", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No rewarded traces to export" in err
    assert not out.exists()


def test_ids_of_a_transaction_that_did_not_commit_are_forgotten(state_url, monkeypatch):
    """The database goes away between allocating a new name's id and committing it: that id is never handed out
    by this server later, so no other server's structure can get it too."""
    import contextlib

    from seer.errors import StateUnavailable

    db = _db(state_url)
    registry = DatabaseLabelRegistry(db, "label_table")
    registry.ensure(["liver"])
    real = db.serialized

    @contextlib.contextmanager
    def dies_at_commit(name):
        with real(name) as conn:
            yield conn
            raise StateUnavailable("gone")

    monkeypatch.setattr(db, "serialized", dies_at_commit)
    with pytest.raises(StateUnavailable):
        registry.ensure(["spleen"])
    monkeypatch.setattr(db, "serialized", real)
    assert DatabaseLabelRegistry(_db(state_url), "label_table").ensure(["pancreas"]) == {"pancreas": 2}
    assert registry.ensure(["spleen", "pancreas"]) == {"spleen": 3, "pancreas": 2}


def test_a_datastore_from_before_rounds_seeds_round_zero_with_its_bank(state_url, tmp_path):
    state = tmp_path / ".seer"
    state.mkdir()
    bank = SkillBank.starter()
    some = dict(list(bank.skills.items())[:3])
    SkillBank(some.values()).save(state / "skills.jsonl")
    rounds = DatabaseSkillRounds(_db(state_url), state)
    assert sorted(rounds.active()[1].skills) == sorted(some)


def test_a_folder_is_imported_once_wherever_it_is_mounted(state_url, tmp_path):
    folder = tmp_path / "one" / ".seer"
    _file_state(folder)
    assert import_state_files(_db(state_url), folder)["traces"] == 4
    moved = tmp_path / "elsewhere" / ".seer"
    moved.parent.mkdir()
    folder.rename(moved)
    assert import_state_files(_db(state_url), moved) is None
    assert DatabaseTraceLog(_db(state_url)).count("s") == 4
