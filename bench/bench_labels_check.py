"""`labels check` on large label maps: the time to build the report against the time to read the map into a label
table (the baseline: every name decoded and parsed once), in one process, after a warm-up.

The maps are built here from the concept table: every structure (both sides when paired) under TotalSegmentator-style
names, repeated with numbered variants up to the size asked (1,000 and 10,000 labels). Goal: under 1 s at 1,000.
Peak memory (tracemalloc) is taken in a second pass.
"""

from __future__ import annotations

import sys
import tracemalloc

from _util import Timer, save, table

from seer.reasoning.label_check import check_label_map
from seer.reasoning.lexicon import default_lexicon
from seer.reasoning.targets import LabelTable


def synthetic_map(size: int) -> dict[str, str]:
    lexicon = default_lexicon()
    names: list[str] = []
    round_ = 0
    while len(names) < size:
        for key in sorted(lexicon.concepts):
            concept = lexicon.concepts[key]
            base = key.replace(" ", "_")
            for name in ([f"{base}_left", f"{base}_right"] if concept.paired else [base]):
                names.append(name if round_ == 0 else f"{name}_v{round_}")
        round_ += 1
    return {str(i + 1): name for i, name in enumerate(names[:size])}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [1000, 10000]
    check_label_map(synthetic_map(50))  # warm-up: lexicon, conventions, parser caches
    rows = []
    for size in sizes:
        labels = synthetic_map(size)
        with Timer() as read:
            LabelTable(labels)
        with Timer() as check:
            report = check_label_map(labels)
        tracemalloc.start()  # memory in a second pass: tracing slows the code it watches
        check_label_map(labels)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append({"labels": size, "read_s": round(read.seconds, 3), "check_s": round(check.seconds, 3),
                     "check / read": round(check.seconds / read.seconds, 2), "peak_mib": round(peak, 1),
                     "with_phrasings": report["summary"]["with_phrasings"]})
    print(table(rows, ["labels", "read_s", "check_s", "check / read", "peak_mib", "with_phrasings"]))
    save("labels-check", {"rows": rows})


if __name__ == "__main__":
    main()
