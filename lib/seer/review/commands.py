"""`review`: the reads of a datastore's studies, their review states, provenance and agreement, from its study-state
database."""

from __future__ import annotations

import json
import time

from seer.errors import SeerError

COLUMNS = ["study", "annotator", "state", "saved", "reviewer", "comment"]
AGREEMENT_COLUMNS = ["study", "first", "second", "min_dice", "mean_dice", "worst"]


def cmd_review(args) -> int:
    from seer.files import text_table
    from seer.loop import learned
    from seer.review.label_reads import LabelReads

    if args.state_db:
        learned.check_state_db_url(args.state_db)
        reads = LabelReads(args.state_db)
    else:
        reads = LabelReads.for_datastore(None, learned.state_dir_for(args.studies))
    if args.action == "agreement":
        pairs = reads.agreement(args.study or None)
        if args.json:
            print(json.dumps({"agreement": pairs}, ensure_ascii=False))
            return 0
        if not pairs:
            print("No two final reads of one study yet" + (f" on '{args.study}'." if args.study else "."))
            return 0
        shown = [{**p, "worst": _worst(p["structures"])} for p in pairs]
        print(text_table(shown, AGREEMENT_COLUMNS))
        return 0
    if args.action == "list":
        rows = reads.all_reads()
    else:
        if not args.study:
            raise SeerError("Give the study: main.py review show STUDY (--studies DIR | --state-db URL).")
        rows = reads.reads(args.study)
        if not rows:
            raise SeerError(f"No label of any annotator on '{args.study}'.")
        if args.json:
            from seer.review.desk import study_reads

            print(json.dumps(study_reads(reads, args.study), ensure_ascii=False))
            return 0
    if args.json:
        print(json.dumps({"reads": rows}, ensure_ascii=False))
        return 0
    shown = [{**r, "saved": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["saved_at"]))} for r in rows]
    print(text_table(shown, COLUMNS))
    if args.action == "show":
        kept = reads.kept_info(args.study)
        for read in rows:
            origin = (kept.get(read["annotator"]) or {}).get("seer_provenance") or {}
            for proposal in origin.get("proposed_by") or []:
                print(f"{read['annotator']}: {proposal.get('target')} proposed by \"{proposal.get('request')}\" "
                      f"(trace {proposal.get('trace_id')}, {proposal.get('reasoner')} + {proposal.get('backbone')}, "
                      f"skill round {proposal.get('skill_round')})")
        for pair in reads.agreement(args.study):
            print(f"agreement {pair['first']} / {pair['second']}: min Dice {pair['min_dice']}, mean Dice "
                  f"{pair['mean_dice']}; worst {_worst(pair['structures'])}")
    return 0


def _worst(structures: dict) -> str:
    """The structure with the lowest Dice, with its Dice and mean surface distance."""
    if not structures:
        return "-"
    name, figures = min(structures.items(), key=lambda item: item[1]["dice"])
    msd = figures.get("msd_mm")
    return f"{name} {figures['dice']:.3f}" + (f" ({msd:.1f} mm)" if msd is not None else "")
