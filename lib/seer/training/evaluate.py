"""`evaluate`: robustness to the wording of a request, measured as the SEER paper measures it.

A manifest row is one case: {"image", "label", "label_id", "label_name", "requests": [...], "dataset", "case_id"}.
SEER-Trace rows (`export-traces`: one request per row, with "raw_prompt") are grouped into cases by
(dataset, case_id, image, label, label_id). Every request is run twice on its case: through SEER (reasoner, target
resolution, backbone) and as the raw request without SEER (seer.loop.rewards.raw_baseline_entry). A refusal counts as
Dice 0, since the target exists in the image, and is reported separately.

Per (dataset, target): mean Dice over cases (each case averaged over its variants), per-case standard deviation
across variants (population std) averaged over cases, per-case worst Dice averaged over cases, for SEER and raw;
and reasoning latency over segmentation latency (segmentation timed once per distinct target and case, as a
request would pay it; the first target of a case includes the atlas registration).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seer.errors import BadRequest, Refusal, SeerError
from seer.files import text_table, write_atomic
from seer.imaging.volume import load_labels, load_volume
from seer.loop.rewards import raw_baseline_entry
from seer.metrics import dice


@dataclass
class Case:
    dataset: str
    case_id: str
    image: str
    label: str
    label_id: int
    label_name: str
    requests: list[str] = field(default_factory=list)
    line: int = 0


def read_manifest(path: str | Path) -> tuple[list[Case], list[dict]]:
    """Cases from a manifest (case rows or SEER-Trace rows) and the problems of rows that cannot run."""
    path = Path(path)
    if not path.is_file():
        raise BadRequest(f"The manifest {path} does not exist.")
    cases: dict[tuple, Case] = {}
    problems: list[dict] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            problems.append({"line": number, "reason": f"line {number} is not a JSON object ({exc})"})
            continue
        reason = _row_problem(row, path.parent)
        if reason:
            problems.append({"line": number, "reason": f"line {number}: {reason}"})
            continue
        image, label = _resolve(row["image"], path.parent), _resolve(row["label"], path.parent)
        dataset = str(row.get("dataset") or "default")
        case_id = str(row.get("case_id") or Path(image).name.split(".")[0])
        label_id = int(row["label_id"])
        key = (dataset, case_id, image, label, label_id)
        case = cases.get(key)
        if case is None:
            case = cases[key] = Case(dataset, case_id, image, label, label_id,
                                     str(row.get("label_name") or f"label {label_id}"), line=number)
        case.requests += [str(r) for r in row["requests"]] if "requests" in row else [str(row["raw_prompt"])]
    return list(cases.values()), problems


def _row_problem(row: dict, base: Path) -> str:
    missing = [k for k in ("image", "label", "label_id") if row.get(k) in (None, "")]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not str(row["label_id"]).lstrip("-").isdigit():
        return f"label_id {row['label_id']!r} is not an integer"
    if "requests" in row:
        if not isinstance(row["requests"], list) or not row["requests"]:
            return "'requests' must be a non-empty list of request texts"
    elif not row.get("raw_prompt"):
        return "has neither 'requests' (a case row) nor 'raw_prompt' (a SEER-Trace row)"
    for key in ("image", "label"):
        if not Path(_resolve(row[key], base)).is_file():
            return f"{key} {row[key]} does not exist"
    return ""


def _resolve(value: str, base: Path) -> str:
    path = Path(str(value))
    return str(path if path.is_absolute() else (base / path))


def run_cases(pipeline, cases: list[Case], progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Every request of every case, SEER and raw; returns (request rows, problems of cases that could not run)."""
    rows: list[dict] = []
    problems: list[dict] = []
    for case in cases:
        try:
            volume = load_volume(case.image, case.case_id)
            labels, affine = load_labels(case.label, f"label map of {case.case_id}")
        except SeerError as exc:
            problems.append({"line": case.line, "reason": f"line {case.line}: {exc.message}"})
            _advance(progress, len(case.requests))
            continue
        if labels.shape != volume.shape:
            problems.append({"line": case.line, "reason": f"line {case.line}: the label map {labels.shape} is on "
                             f"another grid than the image {volume.shape}"})
            _advance(progress, len(case.requests))
            continue
        reference = labels == case.label_id
        if not reference.any():
            problems.append({"line": case.line, "reason": f"line {case.line}: label id {case.label_id} does not "
                             f"occur in the label map {case.label}"})
            _advance(progress, len(case.requests))
            continue
        try:
            rows += _run_case(pipeline, case, volume, reference, progress)
        except Exception as exc:  # noqa: BLE001 - one case that breaks the backbone must not lose the others
            problems.append({"line": case.line, "reason": f"line {case.line}: the case failed "
                             f"({type(exc).__name__}: {str(exc)[:200]})"})
    return rows, problems


class _Masks:
    """The backbone's mask per distinct target of one case, computed once and timed (seconds)."""

    def __init__(self, backbone, volume):
        self.backbone = backbone
        self.volume = volume
        self.masks: dict[tuple, tuple] = {}

    def get(self, entry, evidence) -> tuple:
        """(mask or None, seconds, refusal sentence or None)."""
        key = (entry.id, entry.name)
        if key not in self.masks:
            started = time.perf_counter()
            try:
                mask, why = self.backbone.segment(self.volume, entry, evidence).mask, None
            except Refusal as refusal:
                mask, why = None, refusal.message
            except SeerError as error:  # the backbone could not run on this target: a failed request
                mask, why = None, f"the backbone failed: {error.message}"
            self.masks[key] = (mask, time.perf_counter() - started, why)
        return self.masks[key]


def _run_case(pipeline, case: Case, volume, reference: np.ndarray, progress) -> list[dict]:
    masks = _Masks(pipeline.backbone, volume)
    rows = []
    for request in case.requests:
        row = {"dataset": case.dataset, "case_id": case.case_id, "target": case.label_name,
               "label_id": case.label_id, "request": request}
        started = time.perf_counter()
        try:
            reasoning = pipeline.reason(request, volume)
            reasoning_s = time.perf_counter() - started
            resolution, evidence = reasoning.resolution, reasoning.evidence
            row.update(answer=reasoning.trace.answer, format_valid=reasoning.trace.format_valid)
            refusal = None if resolution.ok else resolution.reason
        except SeerError as exc:  # an unusable request text (empty, too long): a refusal
            reasoning_s, resolution, refusal = time.perf_counter() - started, None, exc.message
            evidence = pipeline.context(volume).evidence
            row.update(answer=None, format_valid=None)
        mask, seg_s = None, None
        if refusal is None:
            mask, seg_s, refusal = masks.get(resolution.entry, evidence)
        row.update(resolved=resolution.entry.name if resolution is not None and resolution.ok else None,
                   dice=round(dice(mask, reference), 6) if mask is not None else 0.0, refused=refusal is not None,
                   refusal=refusal, reasoning_s=round(reasoning_s, 6),
                   segmentation_s=round(seg_s, 6) if seg_s is not None else None)
        entry, method = raw_baseline_entry(request, pipeline.backbone)
        raw_mask = None
        if entry is not None:
            raw_mask, _, why = masks.get(entry, evidence)
            method = method if why is None else f"{method}; refused: {why}"
        row.update(raw_target=entry.name if entry is not None else None, raw_method=method,
                   raw_dice=round(dice(raw_mask, reference), 6) if raw_mask is not None else 0.0)
        rows.append(row)
        _advance(progress, 1)
    return rows


def _advance(progress, n: int) -> None:
    if progress is not None:
        progress(n)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (dataset, target) figures of the SEER paper, SEER beside raw."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["target"]), {}).setdefault(row["case_id"], []).append(row)
    out = []
    for (dataset, target), by_case in sorted(groups.items()):
        seer = [np.array([r["dice"] for r in rs]) for rs in by_case.values()]
        raw = [np.array([r["raw_dice"] for r in rs]) for rs in by_case.values()]
        requests = [r for rs in by_case.values() for r in rs]
        reasoning = [r["reasoning_s"] for r in requests]
        segmentation = [r["segmentation_s"] for r in requests if r["segmentation_s"] is not None]
        mean_reason = float(np.mean(reasoning))
        mean_segment = float(np.mean(segmentation)) if segmentation else math.nan
        item = {
            "dataset": dataset,
            "target": target,
            "cases": len(by_case),
            "requests": len(requests),
            "mean_dice_seer": _mean(d.mean() for d in seer),
            "mean_dice_raw": _mean(d.mean() for d in raw),
            "std_across_variants": _mean(d.std() for d in seer),
            "std_across_variants_raw": _mean(d.std() for d in raw),
            "worst_case_dice": _mean(d.min() for d in seer),
            "worst_case_dice_raw": _mean(d.min() for d in raw),
            "refusals": sum(r["refused"] for r in requests),
            "reasoning_s": round(mean_reason, 6),
            "segmentation_s": round(mean_segment, 6) if segmentation else None,
            "reasoning_overhead": round(mean_reason / mean_segment, 6) if segmentation and mean_segment > 0 else None,
        }
        out.append(item)
    return out


def _mean(values) -> float:
    return round(float(np.mean(list(values))), 6)


def write_outputs(out_dir: str | Path, summary: list[dict], rows: list[dict], problems: list[dict]) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "cases": out / "cases.jsonl", "plot": out / "dice_spread.png"}
    write_atomic(paths["summary"], json.dumps({"targets": summary, "skipped": problems}, indent=1).encode())
    write_atomic(paths["cases"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    plot_dice_spread(rows, paths["plot"])
    return {k: str(v) for k, v in paths.items()}


def plot_dice_spread(rows: list[dict], path: Path) -> None:
    """Per target: the Dice of every request variant, SEER beside raw (box + points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({(r["dataset"], r["target"]) for r in rows})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.9 * len(targets) + 1.5), 4.2), dpi=110)
    rng = np.random.default_rng(0)
    for i, key in enumerate(targets):
        group = [r for r in rows if (r["dataset"], r["target"]) == key]
        for offset, field_name, colour in ((-0.18, "dice", "#1f77b4"), (0.18, "raw_dice", "#ff7f0e")):
            values = [r[field_name] for r in group]
            x = i + offset
            ax.boxplot([values], positions=[x], widths=0.28, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": colour, "alpha": 0.25}, medianprops={"color": colour})
            ax.scatter(x + rng.uniform(-0.07, 0.07, len(values)), values, s=14, color=colour, alpha=0.8,
                       edgecolors="none")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels([t for _, t in targets] if len({d for d, _ in targets}) == 1 else
                       [f"{d}\n{t}" for d, t in targets])
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("Dice per request variant")
    ax.set_title("Dice spread across request wordings")
    ax.scatter([], [], color="#1f77b4", label="SEER")
    ax.scatter([], [], color="#ff7f0e", label="raw request")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def table(summary: list[dict]) -> str:
    return text_table(summary, [
        ("dataset", "dataset"), ("target", "target"), ("cases", "cases"), ("requests", "requests"),
        ("mean_dice_seer", "Dice SEER"), ("mean_dice_raw", "Dice raw"), ("std_across_variants", "std SEER"),
        ("std_across_variants_raw", "std raw"), ("worst_case_dice", "worst SEER"),
        ("worst_case_dice_raw", "worst raw"), ("refusals", "refused"), ("reasoning_overhead", "overhead"),
    ])
