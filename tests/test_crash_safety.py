"""Crash safety of the annotation loop's state, with real processes: a round writer killed between writing and
renaming leaves the previous round loadable; processes rewarding and closing rounds at once lose nothing and
never write a torn bank."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from seer.loop.rewards import TraceLedger
from seer.loop.skill_rounds import SkillRounds
from seer.loop.trace_log import TraceLog
from seer.reasoning.skills import SkillBank

from conftest import REPO

PRELUDE = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO / "lib")!r})
from seer.loop.skill_rounds import SkillRounds
from seer.reasoning.skills import RewardedTrace
from seer.loop.rewards import TraceLedger
from seer.loop.trace_log import TraceLog

def reward(i):
    return RewardedTrace(trace_id=f"t{{i}}", study="s", request=f"lt kidney {{i}}", answer="Segment the left kidney.",
                         target="left kidney", style="abbr_or_short", vis_cue="ABDOMINAL_ORGANS", format_valid=True,
                         credited=(), dice=0.9, raw_dice=0.0, dataset="ds")
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=120)


def test_a_writer_killed_between_write_and_rename_leaves_the_previous_round_loadable(tmp_path):
    state = tmp_path / ".seer"
    SkillRounds(state, round_size=2)
    before = (state / "skills.jsonl").read_bytes()
    child = run_child("""
        import seer.reasoning.skills
        real = os.replace
        calls = []
        def dying_replace(src, dst):
            calls.append(dst)
            if str(dst).endswith("round-0001.jsonl"):  # the bank file is written and synced, not yet renamed
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        seer.reasoning.skills.os.replace = dying_replace
        SkillRounds(sys.argv[1], round_size=2).close_due([reward(0), reward(1)])
    """, str(state))
    assert child.returncode == -9, child.stderr
    assert list((state / "skills").glob("round-0001.jsonl.tmp-*")), "the killed writer left its temp file"
    rounds = SkillRounds(state, round_size=2)
    assert rounds.rounds() == [0] and rounds.active()[0] == 0
    assert (state / "skills.jsonl").read_bytes() == before
    assert len(SkillBank.load(state / "skills.jsonl")) == len(SkillBank.starter())
    closed = rounds.close_due([_trace(0), _trace(1)])  # the close is simply redone
    assert [r.round for r in closed] == [1] and rounds.active()[0] == 1


def _trace(i):
    from seer.reasoning.skills import RewardedTrace

    return RewardedTrace(trace_id=f"t{i}", study="s", request=f"lt kidney {i}", answer="Segment the left kidney.",
                         target="left kidney", style="abbr_or_short", vis_cue="ABDOMINAL_ORGANS", format_valid=True,
                         credited=(), dice=0.9, raw_dice=0.0, dataset="ds")


def test_two_processes_rewarding_and_closing_rounds_at_once_lose_nothing(tmp_path):
    state = tmp_path / ".seer"
    log = TraceLog(state / "traces.jsonl")
    for i in range(450):
        log.append({"type": "trace", "id": f"t{i}", "study": "s", "target": {"id": 1, "name": "kidney_left"},
                    "proposal": f"/p{i}"})
    SkillRounds(state, round_size=50)
    code = """
        first, last = int(sys.argv[2]), int(sys.argv[3])
        ledger = TraceLedger(TraceLog(os.path.join(sys.argv[1], "traces.jsonl")))
        rounds = SkillRounds(sys.argv[1], round_size=50)
        for i in range(first, last):
            ledger.append({"type": "reward", "trace_id": f"t{i}", "study": "s", "dice": 0.9, "raw_dice": 0.0,
                           "gain": 0.9, "request_clean": f"lt kidney {i}", "answer": "Segment the left kidney.",
                           "target_phrase": "left kidney", "style": "abbr_or_short", "format_valid": True,
                           "vis_cue": "ABDOMINAL_ORGANS", "credited": []})
            if i % 25 == 0:
                rounds.close_due(ledger.rewarded_traces())
        rounds.close_due(ledger.rewarded_traces())
        print(rounds.active()[0])
    """
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(state), a, b],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a, b in (("0", "300"), ("150", "450"))]  # 150 proposals rewarded by both at once
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    rows = [json.loads(line) for line in (state / "traces.jsonl").read_text().splitlines()]  # no torn line
    rewarded = [r["trace_id"] for r in rows if r.get("type") == "reward"]
    assert len(rewarded) == 450 and set(rewarded) == {f"t{i}" for i in range(450)}  # none lost, none twice
    rounds = SkillRounds(state, round_size=50)
    assert rounds.rounds() == list(range(10))  # 450 rewards = 9 rounds of 50, each closed once
    ledger = TraceLedger(TraceLog(state / "traces.jsonl"))
    order = [t.trace_id for t in ledger.rewarded_traces()]
    for number in range(1, 10):
        assert rounds.report(number)["trace_ids"] == order[(number - 1) * 50 : number * 50]
        SkillBank.load(rounds.path(number))  # every bank parses
    assert max(int(out.strip()) for out, _ in outputs) == 9  # whoever finished last saw every round
    assert (state / "skills.jsonl").read_bytes() == rounds.path(9).read_bytes()
