"""Commands that read what the annotation loop learned from a datastore: skills, traces, export-traces.
"""

from __future__ import annotations

import json
import sys

from seer.errors import SeerError


def cmd_skills(args) -> int:
    from seer.files import text_table
    from seer.loop import learned

    rounds = learned.open_rounds(args.studies, args.state_db)
    if args.action == "list":
        report = learned.list_skills(rounds, learned.open_ledger(args.studies, args.state_db), args.round)
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
            return 0
        print(f"skill round {report['listed_round']} (active: {report['round']}): {report['size']} skills, "
              f"{report['rewards']} rewards so far")
        print(text_table(report["skills"], ["skill_id", "tag", "canonical", "origin", "created_round", "uses", "utility",
                                        "dice_gain"]))
        return 0
    if args.action == "show":
        if len(args.ids) != 1:
            raise SeerError("Give one skill id: main.py skills show SKILL_ID --studies DIR.")
        skill = learned.show_skill(rounds, args.ids[0])
        if args.json:
            print(json.dumps(skill, ensure_ascii=False))
            return 0
        for key in ("skill_id", "tag", "canonical", "aliases", "content", "origin", "created_round", "uses",
                    "utility", "dice_gain", "score_hint", "gain_sum", "drop_sum", "studies", "fate"):
            print(f"{key:>13}: {skill[key]}")
        print("   provenance:")
        for item in skill["provenance"]:
            print(f"      round {item.get('round')} {item.get('how')}: {item.get('study')} '{item.get('request')}' "
                  f"Dice {item.get('dice')} gain {item.get('gain')}")
        return 0
    if len(args.ids) != 2 or not all(str(i).isdigit() for i in args.ids):
        raise SeerError("Give two round numbers: main.py skills diff ROUND_A ROUND_B --studies DIR.")
    diff = learned.diff_rounds(rounds, int(args.ids[0]), int(args.ids[1]))
    if args.json:
        print(json.dumps(diff, ensure_ascii=False))
        return 0
    print(f"rounds {diff['from']} -> {diff['to']}: {diff['size'][0]} -> {diff['size'][1]} skills")
    for item in diff["added"]:
        print(f"  + {item['skill_id']} {item['tag']} '{item['canonical']}' aliases {item['aliases']}")
    for item in diff["removed"]:
        print(f"  - {item['skill_id']} {item['tag']} '{item['canonical']}': {item['why']}")
    for item in diff["changed"]:
        changes = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in item.items() if isinstance(v, list) and
                            k != "aliases_added")
        extra = f"; aliases + {item['aliases_added']}" if item["aliases_added"] else ""
        print(f"  ~ {item['skill_id']} '{item['canonical']}': {changes}{extra}")
    return 0


def cmd_traces(args) -> int:
    from seer.files import text_table
    from seer.loop import learned

    ledger = learned.open_ledger(args.studies, args.state_db)
    rows = learned.trace_rows(ledger, args.study)
    if args.json:
        rounds = learned.open_rounds(args.studies, args.state_db)
        print(json.dumps({"round": rounds.active()[0], "rewards": ledger.reward_count(), "traces": rows},
                         ensure_ascii=False))
        return 0
    shown = [dict(r, request=str(r["request"])[:40]) for r in rows]
    print(text_table(shown, ["study", "request", "target", "reward_status", "dice", "raw_dice", "gain"]))
    return 0


def cmd_export_traces(args) -> int:
    from seer.loop import learned
    from seer.loop.export import export_traces, skills_of_all_rounds

    report = export_traces(learned.open_ledger(args.studies, args.state_db), args.output,
                           progress=lambda m: print(m, file=sys.stderr) if args.verbose else None,
                           skills=skills_of_all_rounds(learned.open_rounds(args.studies, args.state_db)))
    for item in report["skipped"]:
        print(f"skipped {item['trace_id']}: {item['reason']}", file=sys.stderr)
    print(json.dumps(report))
    return 0
