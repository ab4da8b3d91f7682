"""SEER-Trace datasets from a team's rewarded traces, for LoRA fine-tuning and for `evaluate`.

OUTPUT/seer_traces.jsonl, one row per rewarded proposal:
  image, label (paths), label_id (the value of the target in the label file), label_name, raw_prompt,
  style_bucket, dataset, case_id (the study), trace ("<evidence>..</evidence><rationale>..</rationale><answer>..
  </answer>"), answer, target (what SEER proposed), format_valid, skill_ids, dice, raw_dice, gain, corrected_to,
  trace_id, slices (the contract's 8 PNGs of the study, relative to OUTPUT), skills (the retrieved skills as the
  model read them: [{skill_id, tag, content, audit}], for `finetune`; a skill no round holds any more is left out)
OUTPUT/slices/<case_id>/slice_0.png .. slice_7.png
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from seer.errors import BadRequest, SeerError
from seer.files import write_atomic
from seer.imaging.views import take_views
from seer.imaging.volume import load_volume
from seer.loop.rewards import TraceLedger
from seer.reasoning.skills import Skill
from seer.reasoning.trace import render_output

logger = logging.getLogger(__name__)


def export_traces(
    ledger: TraceLedger, output: str | Path, progress: Callable[[str], None] | None = None,
    skills: Mapping[str, Skill] | None = None,
) -> dict:
    """Write the rewarded traces of `ledger` under `output`; returns {"rows", "studies", "skipped", "path"}.
    `skills`: skill id -> skill, to write the retrieved skills' text into each row."""
    skills = skills or {}
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped, slices_of = [], [], {}
    for trace_id in ledger.reward_order:
        if trace_id in ledger.withdrawn:  # its label was rejected after it taught
            continue
        reward = ledger.rewards[trace_id]
        trace = ledger.traces.get(trace_id)
        if trace is None:
            skipped.append({"trace_id": trace_id, "reason": "its trace row is missing from the log"})
            continue
        case = str(reward.get("study") or trace.get("study"))
        if case not in slices_of:
            try:
                slices_of[case] = _write_slices(reward["image"], out, case)
                if progress:
                    progress(f"slices of {case}")
            except SeerError as exc:
                slices_of[case] = None
                logger.warning("no slices for %s: %s", case, exc.message)
        if slices_of[case] is None:
            skipped.append({"trace_id": trace_id, "reason": f"the study image of '{case}' is unreadable"})
            continue
        values = reward.get("label_values") or []
        rows.append({
            "image": reward.get("image"),
            "label": reward.get("label"),
            "label_id": int(values[0]) if values else None,
            "label_name": reward.get("reference"),
            "raw_prompt": trace.get("request"),
            "style_bucket": trace.get("style"),
            "dataset": reward.get("dataset") or "local",
            "case_id": case,
            "trace": render_output(trace.get("evidence") or "", trace.get("rationale") or "", trace.get("answer") or ""),
            "answer": trace.get("answer"),
            "target": (trace.get("target") or {}).get("name"),
            "format_valid": bool(trace.get("format_valid")),
            "skill_ids": trace.get("skill_ids") or [],
            "dice": reward.get("dice"),
            "raw_dice": reward.get("raw_dice"),
            "gain": reward.get("gain"),
            "corrected_to": reward.get("corrected_to"),
            "trace_id": trace_id,
            "slices": slices_of[case],
            "skills": [{"skill_id": s.skill_id, "tag": s.tag, "content": s.content, "audit": s.audit}
                       for sid in trace.get("skill_ids") or [] if (s := skills.get(str(sid)))],
        })
    if not rows:
        raise BadRequest("No rewarded traces to export: save final labels (with label names) for studies that "
                         "have proposals, then try again.")
    path = out / "seer_traces.jsonl"
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return {"path": str(path), "rows": len(rows), "studies": len([s for s in slices_of.values() if s]),
            "skipped": skipped}


def skills_of_all_rounds(rounds) -> dict[str, Skill]:
    """Every skill of every round on disk by id (a later round's version wins): what a trace's skill ids named."""
    found: dict[str, Skill] = {}
    for number in rounds.rounds():
        found.update(rounds.bank(number).skills)
    return found


def _write_slices(image: str, out: Path, case: str) -> list[str]:
    views = take_views(load_volume(image, case).array)
    folder = out / "slices" / _safe(case)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, picture in enumerate(views.images()):
        name = folder / f"slice_{i}.png"
        tmp = name.with_name(name.name + f".tmp-{os.getpid()}")
        picture.save(tmp, format="PNG")
        os.replace(tmp, name)
        names.append(str(name.relative_to(out)))
    return names


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120] or "case"
