"""`review`: the reads of a datastore's studies and their review states, from its study-state database."""

from __future__ import annotations

import json
import time

from seer.errors import SeerError

COLUMNS = ["study", "annotator", "state", "saved", "reviewer", "comment"]


def cmd_review(args) -> int:
    from seer.files import text_table
    from seer.loop import learned
    from seer.review.label_reads import LabelReads

    if args.state_db:
        learned.check_state_db_url(args.state_db)
        reads = LabelReads(args.state_db)
    else:
        reads = LabelReads.for_datastore(None, learned.state_dir_for(args.studies))
    if args.action == "list":
        rows = reads.all_reads()
    else:
        if not args.study:
            raise SeerError("Give the study: main.py review show STUDY (--studies DIR | --state-db URL).")
        rows = reads.reads(args.study)
        if not rows:
            raise SeerError(f"No label of any annotator on '{args.study}'.")
    if args.json:
        print(json.dumps({"reads": rows}, ensure_ascii=False))
        return 0
    shown = [{**r, "saved": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["saved_at"]))} for r in rows]
    print(text_table(shown, COLUMNS))
    return 0
