"""Skill bank at 10,000 skills: one round close (credit + utility, retirement, harvest, merge, cap) and retrieval
per request through the index, against the reference's linear scan measured in the same run.

The bank is made of harvested skills over 120 targets x 7 styles x 4 image cues with realistic request aliases
(as `evolve` writes them), plus the starter skills. A round closes over 20 rewards that credit skills of the bank
and harvest new ones. Goals: round close under 20 ms, retrieval under 2 ms per request.
Run: python bench/bench_skills.py
"""

from __future__ import annotations

import random
import statistics
import time
import tracemalloc

from _util import save, table

from seer.reasoning.skills import STYLE_TO_TAG, EvolutionSettings, RewardedTrace, SkillBank, evolve, harvest_skill
from seer.reasoning.targets import LabelTable

SIZE = 10_000
ORGANS = ["liver", "spleen", "pancreas", "stomach", "gallbladder", "aorta", "inferior vena cava", "esophagus",
          "trachea", "urinary bladder", "prostate", "sacrum", "duodenum", "colon", "small bowel", "heart", "brain",
          "thyroid gland", "portal vein", "white matter"]
PAIRED = ["kidney", "hip bone", "femur", "adrenal gland", "lung upper lobe", "hippocampus", "amygdala", "caudate",
          "putamen", "thalamus", "humerus", "scapula", "clavicle", "iliac artery", "gluteus maximus", "autochthon",
          "rib 1", "rib 2", "rib 3", "rib 4"]
TARGETS = ORGANS + [f"{side} {p}" for p in PAIRED for side in ("left", "right")] + \
    [f"{side} {p} posterior" for p in PAIRED[:10] for side in ("left", "right")]
CUES = ["ABDOMINAL_ORGANS", "PELVIC_BONES", "BRAIN_LESION", "GENERIC_MEDICAL_IMAGE"]
STYLES = list(STYLE_TO_TAG)
FORMS = ["{t}", "{t} pls", "segment the {t}", "contour {t} for planning", "Findings: lesion near the {t}", "{a}",
         "{a} pls", "the {t} please", "{t}!!", "outline {t}", "{t} asap", "need {t}"]


def abbreviate(target: str) -> str:
    return " ".join(w[:2] if w in ("left", "right") else w[:4] for w in target.split())


def trace(rng: random.Random, i: int, credited=()) -> RewardedTrace:
    target = rng.choice(TARGETS)
    request = rng.choice(FORMS).format(t=target, a=abbreviate(target)) + f" #{i}"
    return RewardedTrace(trace_id=f"t{i}", study=f"study{i % 997}", request=request,
                         answer=f"Segment the {target}.", target=target, style=rng.choice(STYLES),
                         vis_cue=rng.choice(CUES), format_valid=True, credited=tuple(credited),
                         dice=rng.uniform(0.5, 1.0), raw_dice=rng.uniform(0.0, 0.2), dataset=rng.choice(["a", "b"]))


def build_bank(rng: random.Random) -> SkillBank:
    """10,000 skills as evolution leaves them: at most `merge_keep` (10) per (dataset, tag, target)."""
    skills = list(SkillBank.starter().skills.values())
    groups: dict[tuple, int] = {}
    i = 0
    while len(skills) < SIZE:
        skill = harvest_skill(trace(rng, i), rng.randint(1, 50))
        i += 1
        key = (skill.dataset, skill.tag, skill.canonical)
        if groups.get(key, 0) < 10:
            groups[key] = groups.get(key, 0) + 1
            skills.append(skill)
    return SkillBank(skills)


def main():
    rng = random.Random(0)
    names = {i + 1: t.replace(" ", "_") for i, t in enumerate(TARGETS)}
    tracemalloc.start()  # memory first, in a pass of its own: tracing slows everything it watches
    bank = build_bank(random.Random(1))
    bank_bytes = tracemalloc.get_traced_memory()[0]
    bank.index(LabelTable(names).parser)
    index_bytes = tracemalloc.get_traced_memory()[0] - bank_bytes
    tracemalloc.stop()
    del bank

    bank = build_bank(rng)
    ids = sorted(bank.skills)
    rules = EvolutionSettings(cap_min=50)

    # -- one round close -----------------------------------------------------------------------------------------
    closes, writes = [], []
    for repeat in range(15):
        rewards = [trace(rng, 100_000 + 20 * repeat + j, credited=[rng.choice(ids)]) for j in range(20)]
        started = time.perf_counter()
        new, report = evolve(bank, rewards, 51, 400_000, rules)
        closes.append(time.perf_counter() - started)
        started = time.perf_counter()
        new.payload()
        writes.append(time.perf_counter() - started)
    close_ms = statistics.median(closes) * 1000

    # -- retrieval ------------------------------------------------------------------------------------------------
    cold = LabelTable({**names, 999: "new_structure"}).parser  # a vocabulary never seen: nothing cached
    started = time.perf_counter()
    bank.index(cold)
    index_cold_s = time.perf_counter() - started
    parser = LabelTable(names).parser
    bank.index(parser)
    after_close, _ = evolve(bank, rewards, 52, 400_000, rules)  # the next round's bank: 20 new skills
    started = time.perf_counter()
    after_close.index(parser)
    index_build_s = time.perf_counter() - started
    requests = [rng.choice(FORMS).format(t=t, a=abbreviate(t)) for t in rng.choices(TARGETS, k=200)]
    cues = [bank.cue(r, parser.parse(r), rng.choice(CUES), None, rng.choice(["", "a"])) for r in requests]
    started = time.perf_counter()
    indexed = [bank.retrieve(c, parser) for c in cues]
    index_ms = (time.perf_counter() - started) / len(cues) * 1000
    started = time.perf_counter()
    scanned = [bank.retrieve_scan(c, parser) for c in cues[:40]]
    scan_ms = (time.perf_counter() - started) / 40 * 1000
    same = all([s.skill_id for s, _ in a] == [s.skill_id for s, _ in b] for a, b in zip(indexed, scanned, strict=False))

    rows = [
        {"measure": "round close (evolve: credit, utility, harvest, merge, cap), 20 rewards", "ms": close_ms,
         "goal_ms": 20.0, "met": close_ms < 20.0},
        {"measure": "serialize the new bank (JSONL payload, before the atomic write)",
         "ms": statistics.median(writes) * 1000, "goal_ms": None, "met": None},
        {"measure": "retrieval per request, index", "ms": index_ms, "goal_ms": 2.0, "met": index_ms < 2.0},
        {"measure": "retrieval per request, linear scan (baseline)", "ms": scan_ms, "goal_ms": None, "met": None},
        {"measure": "index build for a new bank (after a round close), parses cached", "ms": index_build_s * 1000,
         "goal_ms": None, "met": None},
        {"measure": "index build for a new label vocabulary (cold parse cache)", "ms": index_cold_s * 1000,
         "goal_ms": None, "met": None},
    ]
    print(f"bank: {len(bank)} skills, {bank_bytes / 2**20:.1f} MiB in memory; index {index_bytes / 2**20:.1f} MiB")
    print(table(rows, ["measure", "ms", "goal_ms", "met"]))
    print(f"linear scan / index: {scan_ms / index_ms:.0f}x faster; same top-3 for all 40 compared requests: {same}")
    print(f"round report of the last close: {len(report.credited)} credited, {len(report.retired)} retired, "
          f"{len(report.harvested)} harvested, {len(report.merged)} merged, {len(report.capped)} capped")
    save("skills", {"rows": rows, "skills": len(bank), "bank_mib": bank_bytes / 2**20,
                    "index_mib": index_bytes / 2**20, "scan_over_index": scan_ms / index_ms, "same_ranking": same})


if __name__ == "__main__":
    main()
