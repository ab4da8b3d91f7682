"""What the system learned, read from a datastore's state: skills per round, their utility and provenance, and the
trace rows with their rewards. The `skills` and `traces` commands print these; their JSON field names are stable
(scripts read them).
"""

from __future__ import annotations

from pathlib import Path

from seer.errors import BadRequest
from seer.loop.rewards import TraceLedger
from seer.loop.skill_rounds import SkillRounds
from seer.loop.trace_log import TraceLog
from seer.reasoning.skills import Skill


def state_dir_for(studies: str) -> Path:
    """Where a studies folder (or DICOMweb URL) keeps SEER's state: <studies>/.seer, as the app writes it."""
    from seer.files import datastore_state_dir

    remote = studies.startswith(("http://", "https://"))
    if not remote and not Path(studies).is_dir():
        raise BadRequest(f"The studies folder '{studies}' does not exist.")
    state = datastore_state_dir(studies, None if remote else studies)
    if not state.is_dir():
        raise BadRequest(f"'{studies}' holds no SEER state (.seer); start the server on it first.")
    return state


def open_rounds(studies: str, state_db: str | None = None) -> SkillRounds:
    """The skill rounds of a studies folder, or of the shared state database `state_db` (a URL) when given."""
    if state_db:
        from seer.state_db.skill_round_table import DatabaseSkillRounds

        return DatabaseSkillRounds(_database(state_db), create=False)
    return SkillRounds(state_dir_for(studies), create=False)


def open_ledger(studies: str, state_db: str | None = None) -> TraceLedger:
    """The trace log of a studies folder (or of the shared state database `state_db`), read into a ledger."""
    if state_db:
        from seer.state_db.trace_table import DatabaseTraceLog

        log = DatabaseTraceLog(_database(state_db))
    else:
        log = TraceLog(state_dir_for(studies) / "traces.jsonl")
    ledger = TraceLedger(log)
    ledger.refresh()
    return ledger


_DATABASES: dict = {}


def check_state_db_url(url: str) -> None:
    """BadRequest unless `url` is a postgresql:// or sqlite:/// URL."""
    if not url.startswith(("postgresql", "sqlite")):
        raise BadRequest(f"--state-db must be a postgresql://user:password@host/database or sqlite:///path URL, got "
                         f"{url.split('@')[-1]!r}.")


def _database(url: str):
    """One StateDatabase per URL for a command (skills list opens rounds and ledger on the same database)."""
    from seer.state_db.database import StateDatabase

    check_state_db_url(url)
    if url not in _DATABASES:
        _DATABASES[url] = StateDatabase(url)
    return _DATABASES[url]


def skill_summary(skill: Skill) -> dict:
    """One skill as `skills list --json` prints it."""
    made = next((p for p in skill.provenance if p.get("how") == "harvested"), None)
    return {
        "skill_id": skill.skill_id,
        "tag": skill.tag,
        "canonical": skill.canonical,
        "aliases": skill.aliases,
        "dataset": skill.dataset,
        "vis_cue": skill.vis_cue,
        "origin": "harvested" if made else ("starter" if skill.dataset == "starter" else "seed"),
        "created_round": skill.created_round,
        "uses": skill.uses,
        "utility": skill.utility,
        "dice_gain": skill.dice_gain,
        "score_hint": skill.score_hint,
        "studies": sorted({str(p.get("study")) for p in skill.provenance if p.get("study")}),
    }


def list_skills(rounds: SkillRounds, ledger: TraceLedger | None = None, number: int | None = None) -> dict:
    active, bank = rounds.active()
    if number is not None and number != active:
        bank = rounds.bank(number)
    skills = sorted(bank.skills.values(), key=lambda s: (-s.dice_gain, -s.uses, s.skill_id))
    return {
        "round": active,
        "listed_round": active if number is None else number,
        "rounds": rounds.rounds(),
        "size": len(bank),
        "rewards": ledger.reward_count() if ledger else None,
        "skills": [skill_summary(s) for s in skills],
    }


def show_skill(rounds: SkillRounds, skill_id: str) -> dict:
    """A skill's newest version with its whole provenance, and its statistics in every round that held it."""
    history, newest = [], None
    for number in rounds.rounds():
        skill = rounds.bank(number).skills.get(skill_id)
        if skill is None:
            continue
        newest = (number, skill)
        history.append({"round": number, "uses": skill.uses, "utility": skill.utility, "dice_gain": skill.dice_gain,
                        "aliases": len(skill.aliases)})
    if newest is None:
        raise BadRequest(f"No skill '{skill_id}' in any round; `skills list` shows the ids.")
    number, skill = newest
    active, _ = rounds.active()
    fate = None
    if number != active:
        fate = _fate(rounds, skill_id, number + 1) or f"gone after round {number}"
    return skill_summary(skill) | {
        "content": skill.content, "audit": skill.audit, "source_key": skill.source_key, "gain_sum": skill.gain_sum,
        "drop_sum": skill.drop_sum, "provenance": skill.provenance, "last_round": number, "active": fate is None,
        "fate": fate, "history": history,
    }


def _fate(rounds: SkillRounds, skill_id: str, number: int) -> str | None:
    report = rounds.report(number)
    if skill_id in report.get("retired", []):
        return f"retired in round {number} (utility below zero)"
    if skill_id in report.get("merged", {}):
        return f"merged into {report['merged'][skill_id]} in round {number}"
    if skill_id in report.get("capped", []):
        return f"dropped by the size cap in round {number}"
    return None


def diff_rounds(rounds: SkillRounds, first: int, second: int) -> dict:
    """Skills added, removed (and why) and changed between two rounds."""
    a, b = rounds.bank(first), rounds.bank(second)
    lo, hi = sorted((first, second))
    removed = []
    for skill_id in sorted(set(a.skills) - set(b.skills)):
        why = next((f for n in range(lo + 1, hi + 1) if (f := _fate(rounds, skill_id, n))), None)
        removed.append(skill_summary(a.skills[skill_id]) | {"why": why or "not in the later round"})
    changed = []
    for skill_id in sorted(set(a.skills) & set(b.skills)):
        old, new = a.skills[skill_id], b.skills[skill_id]
        fields = {k: [getattr(old, k), getattr(new, k)] for k in ("uses", "utility", "dice_gain")
                  if getattr(old, k) != getattr(new, k)}
        added_aliases = [x for x in new.aliases if x not in old.aliases]
        if fields or added_aliases:
            changed.append({"skill_id": skill_id, "tag": new.tag, "canonical": new.canonical, **fields,
                            "aliases_added": added_aliases})
    return {
        "from": first,
        "to": second,
        "size": [len(a), len(b)],
        "added": [skill_summary(b.skills[i]) for i in sorted(set(b.skills) - set(a.skills))],
        "removed": removed,
        "changed": changed,
    }


def trace_rows(ledger: TraceLedger, study: str | None = None) -> list[dict]:
    """Every request in the log (oldest first) with its reward once computed (fields dice, raw_dice, gain)."""
    out = []
    for trace_id, row in ledger.traces.items():
        if study is not None and row.get("study") != study:
            continue
        reward = ledger.rewards.get(trace_id)
        skip = ledger.skipped.get(trace_id)
        target = row.get("target") or {}
        if row.get("refused"):
            status = "refused"
        elif not row.get("proposal"):
            status = "no proposal"
        elif reward is not None:
            status = "withdrawn" if trace_id in ledger.withdrawn else "rewarded"
        elif skip is not None:
            status = "skipped: " + str(skip.get("reason"))
        else:
            status = "pending"
        out.append({
            "id": trace_id,
            "ts": row.get("ts"),
            "study": row.get("study"),
            "request": row.get("request"),
            "answer": row.get("answer"),
            "target": target.get("name"),
            "target_id": target.get("id"),
            "refused": (row.get("refused") or {}).get("reason"),
            "skill_ids": row.get("skill_ids") or [],
            "reward_status": status,
            "dice": reward.get("dice") if reward else None,
            "raw_dice": reward.get("raw_dice") if reward else None,
            "gain": reward.get("gain") if reward else None,
            "reference": reward.get("reference") if reward else None,
            "corrected_to": reward.get("corrected_to") if reward else None,
            "credited": reward.get("credited") if reward else None,
        })
    return out
