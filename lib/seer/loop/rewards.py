"""Rewards from saved labels: every proposal in the trace log is scored against the final label an annotator saved.

reward (`dice`): Dice of the proposal's mask against the saved label restricted to the same target. Targets are
matched through the saved label's own names (`label_names` as SEER returns them, or Slicer's `label_info`), never
by assuming that foreign label values are our ids; a label without names earns no reward. When the saved label
does not hold the proposed target but the request itself resolves onto one of its structures, the annotator
corrected the proposal to that structure: the reward is the Dice against it (`corrected_to`).

baseline (`raw_dice`): the raw request without SEER. A text-promptable backbone gets the raw request as its
prompt; a label-indexed backbone gets the naive resolution of the raw text (the label whose name equals it, else
the longest label name found inside it), else Dice 0. `gain` = dice - raw_dice, as the contract defines it.

Rewards are appended to the trace log (`type: "reward"`), once per proposal, checked under the log's lock so that
two processes never reward one proposal twice. A proposal that cannot be rewarded gets a `reward_skipped` row
naming the reason and the label version, and is tried again when that label changes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seer.errors import Refusal, SeerError
from seer.imaging.volume import Volume, load_labels
from seer.loop.trace_log import TraceLog, is_proposal, local_proposal_file
from seer.metrics import dice
from seer.reasoning.skills import RewardedTrace, credited_skills
from seer.reasoning.targets import LabelEntry, LabelTable, Resolver, label_mapping
from seer.segmentation.atlases import structure_key

logger = logging.getLogger(__name__)


def label_names_from_info(info: dict | None) -> dict[int, str] | None:
    """Label value -> structure name from a saved label's params: `label_names` ({name: value}, as SEER returns
    it) or `label_info` ([{"name", "idx"}], as the Slicer plugin sends it). None when the label carries neither;
    {} when it does but no entry is usable."""
    info = info or {}
    params = info.get("params") if isinstance(info.get("params"), dict) else {}
    label_names = info.get("label_names") or params.get("label_names")
    if isinstance(label_names, dict):
        return label_mapping(label_names, strict=False)
    label_info = info.get("label_info") or params.get("label_info")
    if isinstance(label_info, list):
        pairs = {str(item["idx"]): str(item["name"]) for item in label_info
                 if isinstance(item, dict) and "name" in item and str(item.get("idx", "")).isdigit()}
        return label_mapping(pairs, strict=False)
    return None


def _plain(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def naive_entry(raw: str, table: LabelTable) -> tuple[LabelEntry | None, str]:
    """The raw-request baseline for a label-indexed backbone: the entry whose name equals the request (case, '_'
    and punctuation ignored), else the longest entry name found inside it as whole words; (None, why) otherwise."""
    text = _plain(raw)
    if not text:
        return None, "empty request"
    names = [(_plain(e.name), e) for e in table.entries]
    for name, entry in names:
        if name == text:
            return entry, "exact label name"
    inside = [(len(name), entry) for name, entry in names if name and f" {name} " in f" {text} "]
    if not inside:
        return None, "no label name in the request"
    inside.sort(key=lambda x: -x[0])
    if len(inside) > 1 and inside[0][0] == inside[1][0] and inside[0][1].name != inside[1][1].name:
        return None, "two label names of equal length in the request"
    return inside[0][1], "label name in the request"


def raw_baseline_entry(raw: str, backbone) -> tuple[LabelEntry | None, str]:
    """What the backbone would segment for the raw request without SEER (see the module docstring). A
    text-promptable backbone's entry carries the raw text as its prompt and id 0: it is never written into a mask
    or registered as a target."""
    if getattr(backbone, "free_text", False):
        text = " ".join(str(raw or "").split())
        if not text:
            return None, "empty request"
        parsed = backbone.label_table().parser.parse(text, correct_typos=False)
        return LabelEntry(0, text, parsed, prompt=text), "raw request as the backbone's text prompt"
    return naive_entry(raw, backbone.label_table())


@dataclass(frozen=True)
class FinalLabel:
    """A study's final label: where it is, the names of its values (None: it has none), a stamp that changes
    whenever the file changes, and when it was saved (the file's mtime, seconds since the epoch)."""

    study: str
    image_path: str
    label_path: str
    names: dict[int, str] | None
    stamp: str
    saved_at: float = float("inf")

    @classmethod
    def of(cls, study: str, image_path: str, label_path: str, names: dict[int, str] | None) -> FinalLabel:
        stat = os.stat(label_path)
        return cls(study, image_path, label_path, names, f"{stat.st_mtime_ns}-{stat.st_size}", stat.st_mtime)


# What the ledger keeps of a trace row (rewards, `traces`, `export-traces`); model text and timings stay on disk.
_TRACE_FIELDS = ("type", "id", "ts", "study", "request", "request_clean", "style", "evidence", "rationale", "answer",
                 "format_valid", "skill_ids", "reasoner", "target", "target_phrase", "vis_cue", "refused", "proposal")


class TraceLedger:
    """The trace log read incrementally into an index: trace rows by id, proposals per study, the reward of each
    proposal (the first reward row wins) in log order, and the newest skip per proposal. Thread-safe."""

    def __init__(self, log: TraceLog):
        self.log = log
        self._position = None  # (live file identity, offset); None before the first read
        self._archives_read: set[str] = set()
        self._lock = threading.RLock()
        self.traces: dict[str, dict] = {}
        self.proposals_by_study: dict[str, list[str]] = {}
        self.rewards: dict[str, dict] = {}
        self.reward_order: list[str] = []
        self.skipped: dict[str, dict] = {}
        self.withdrawn: dict[str, dict] = {}  # rewarded trace id -> the withdrawal row that took its reward back

    def refresh(self) -> None:
        """Read what was appended since the last refresh; after a rotation (or on the first read), the archives
        not read yet come first."""
        with self._lock:
            first = self._position is None
            rows, self._position, rotated = self.log.read_since(self._position)
            if first or rotated:
                for archive in self.log.archives():
                    if archive.name not in self._archives_read:
                        self._archives_read.add(archive.name)
                        for row in self.log.read_archive(archive):
                            self._take(row)
            for row in rows:
                self._take(row)

    def _take(self, row: dict) -> None:
        kind = row.get("type", "trace")
        if kind == "withdrawal":
            for withdrawn in row.get("trace_ids") or ():
                self.withdrawn.setdefault(str(withdrawn), row)
            return
        trace_id = str(row.get("trace_id") or row.get("id") or "")
        if not trace_id:
            return
        if kind == "trace":
            if trace_id in self.traces:
                return  # a row a rotation carried over into the new live file
            self.traces[trace_id] = {k: row[k] for k in _TRACE_FIELDS if k in row}
            if is_proposal(row):
                self.proposals_by_study.setdefault(str(row.get("study")), []).append(trace_id)
        elif kind == "reward" and trace_id not in self.rewards:
            self.rewards[trace_id] = row
            self.reward_order.append(trace_id)
        elif kind == "reward_skipped":
            self.skipped[trace_id] = row

    def pending(self, study: str, stamp: str | None = None, saved_at: float = float("inf")) -> list[dict]:
        """Proposals on `study` without a reward, made before the label was saved (`saved_at`, epoch seconds: a
        proposal is judged by the first final label saved after it), not already skipped for this label version."""
        with self._lock:
            self.refresh()
            out = []
            for trace_id in self.proposals_by_study.get(study, []):
                if trace_id in self.rewards or float(self.traces[trace_id].get("ts") or 0) > saved_at:
                    continue
                skip = self.skipped.get(trace_id)
                if skip is not None and stamp is not None and skip.get("label_stamp") == stamp:
                    continue
                out.append(self.traces[trace_id])
            return out

    def studies_with_pending(self) -> list[str]:
        with self._lock:
            self.refresh()
            return [s for s, ids in self.proposals_by_study.items() if any(i not in self.rewards for i in ids)]

    def append(self, row: dict) -> bool:
        """Append a reward or skip row; a reward for an already rewarded proposal is dropped (False)."""
        with self._lock, self.log.lock:
            self.refresh()
            if row.get("type") == "reward" and row["trace_id"] in self.rewards:
                return False
            added = self.log.append(row) is not None  # None: the shared database holds this reward already
            self.refresh()
            return added

    def waiting(self) -> set[str]:
        """Trace ids of the proposals still waiting for a reward."""
        with self._lock:
            self.refresh()
            return {t for ids in self.proposals_by_study.values() for t in ids if t not in self.rewards}

    def rewarded_traces(self) -> list[RewardedTrace]:
        """Every reward in log order, as skill evolution reads it (a withdrawn one keeps its place, marked, so the
        rounds' reward positions stay as they were; evolution leaves it out)."""
        with self._lock:
            self.refresh()
            return [rewarded_trace(self.rewards[i], withdrawn=i in self.withdrawn) for i in self.reward_order]

    def withdraw(self, study: str, reason: str, by: str) -> list[str]:
        """Take back the rewards `study` earned so far (its label was rejected after it taught): one `withdrawal`
        row in the trace log names them, with why and who, so a round that used them can be recomputed; the next
        rounds and exported datasets leave them out. Returns the trace ids withdrawn (none: no row)."""
        with self._lock, self.log.lock:
            self.refresh()
            ids = [t for t in self.reward_order if str(self.rewards[t].get("study")) == study and
                   t not in self.withdrawn]
            if ids:
                self.log.append({"type": "withdrawal", "id": f"withdrawal-{uuid.uuid4().hex[:12]}", "study": study,
                                 "trace_ids": ids, "reason": reason, "by": by})
                self.refresh()
            return ids

    def withdrawn_count(self) -> int:
        with self._lock:
            self.refresh()
            return len(self.withdrawn)

    def reward_count(self) -> int:
        """Rewards recorded so far (by any server, when the log is the shared state database's)."""
        with self._lock:
            self.refresh()
            return len(self.reward_order)

    def rewarded_proposals(self) -> set[str]:
        """Paths of the proposals whose reward is recorded (housekeeping may delete them once old)."""
        with self._lock:
            self.refresh()
            return {str(self.traces[t].get("proposal")) for t in self.rewards if self.traces.get(t, {}).get("proposal")}

    def reward_counts(self) -> dict[str, int]:
        """study -> rewards earned by its proposals (by any server, when the log is the shared database's)."""
        with self._lock:
            self.refresh()
            counts: dict[str, int] = {}
            for trace_id, row in self.rewards.items():
                if trace_id in self.withdrawn:
                    continue
                counts[str(row.get("study"))] = counts.get(str(row.get("study")), 0) + 1
            return counts


def rewarded_trace(row: dict, withdrawn: bool = False) -> RewardedTrace:
    return RewardedTrace(
        trace_id=str(row["trace_id"]),
        study=str(row.get("study") or ""),
        request=str(row.get("request_clean") or row.get("request") or ""),
        answer=str(row.get("answer") or ""),
        target=str(row.get("target_phrase") or ""),
        style=str(row.get("style") or ""),
        vis_cue=str(row.get("vis_cue") or ""),
        format_valid=bool(row.get("format_valid")),
        credited=tuple(row.get("credited") or ()),
        dice=float(row.get("dice") or 0.0),
        raw_dice=float(row.get("raw_dice") or 0.0),
        dataset=str(row.get("dataset") or ""),
        withdrawn=withdrawn,
    )


class Rewarder:
    """Computes the reward rows of one study's pending proposals against its final label.

    backbone: runs the raw-request baseline; context: volume -> StudyContext (evidence for the backbone);
    load_volume: path -> Volume (a shared cache); skill_tag: skill id -> its tag (None when unknown), for credit;
    proposal_file: trace row -> a context manager yielding a readable file of its proposal, or None (the trace log's
    `proposal_file`: the file itself, or the mask the shared state database stored with the trace).
    """

    def __init__(
        self,
        backbone,
        context: Callable[[Volume], object],
        load_volume: Callable[[str], Volume],
        skill_tag: Callable[[str], str | None],
        dataset: str = "",
        proposal_file: Callable[[dict], object] | None = None,
    ):
        self.proposal_file = proposal_file or local_proposal_file
        self.backbone = backbone
        self.context = context
        self.load_volume = load_volume
        self.skill_tag = skill_tag
        self.dataset = dataset

    def rows(self, final: FinalLabel, proposals: list[dict]) -> tuple[list[dict], str]:
        """(reward or reward_skipped rows, one sentence for the log when the whole label is unusable)."""
        if not proposals:
            return [], ""
        if not final.names:
            why = (f"the final label of '{final.study}' carries no label names (label_names or label_info), so its "
                   "values cannot be matched to targets")
            return [self._skip(final, row, why) for row in proposals], why
        try:
            volume = self.load_volume(final.image_path)
            labels, affine = load_labels(final.label_path, f"final label of {final.study}")
        except SeerError as exc:
            why = f"the final label of '{final.study}' could not be read: {exc.message}"
            return [self._skip(final, row, why) for row in proposals], why
        if labels.shape != volume.shape or not np.allclose(affine, volume.affine, atol=0.05):
            why = (f"the final label of '{final.study}' is on another grid ({labels.shape}) than its study "
                   f"({volume.shape}); it earns no reward until it is saved on the study's grid")
            return [self._skip(final, row, why) for row in proposals], why
        table = LabelTable(final.names)
        keys: dict[tuple, list[int]] = {}
        for value, name in final.names.items():
            keys.setdefault(structure_key(name), []).append(value)
        baselines: dict[str, tuple] = {}
        out = []
        for row in proposals:
            try:
                out.append(self._reward(final, row, volume, labels, table, keys, baselines))
            except SeerError as exc:
                out.append(self._skip(final, row, exc.message))
            except Exception as exc:  # noqa: BLE001 - one failing proposal must not stop the others
                logger.exception("reward of %s failed", row.get("id"))
                out.append(self._skip(final, row, f"the reward could not be computed ({type(exc).__name__}: "
                                                  f"{str(exc)[:160]})"))
        return out, ""

    def _reward(self, final, row, volume, labels, table, keys, baselines) -> dict:
        target = row["target"]
        values = keys.get(structure_key(target["name"]))
        corrected_to = None
        if values:
            reference_name = final.names[values[0]]
        else:
            resolution = Resolver(table).resolve(str(row.get("request_clean") or row.get("request") or ""))
            if not resolution.ok:
                held = ", ".join(sorted(set(final.names.values()))[:6])
                return self._skip(final, row, f"the final label holds no '{target['name']}' (it holds {held})")
            reference_name = corrected_to = resolution.entry.name
            values = [resolution.entry.id]
        reference = np.isin(labels, values)
        if not reference.any():
            return self._skip(final, row, f"the final label names '{reference_name}' but holds no voxel of it")
        with self.proposal_file(row) as proposal_path:
            if proposal_path is None:
                return self._skip(final, row, f"the proposal file {row.get('proposal')} is gone")
            proposal, _ = load_labels(proposal_path, "proposal")
        if proposal.shape != labels.shape:
            return self._skip(final, row, "the proposal is on another grid than the final label")
        proposal = proposal > 0
        score = round(dice(proposal, reference), 6)
        raw_dice, raw_target, raw_method = self._baseline(row, volume, reference, proposal, baselines)
        raw_dice = round(raw_dice, 6)
        retrieved = [str(i) for i in row.get("skill_ids") or []]
        tags = {sid: tag for sid in retrieved if (tag := self.skill_tag(sid))}
        return {
            "type": "reward",
            "trace_id": row["id"],
            "study": final.study,
            "dice": score,
            "raw_dice": raw_dice,
            "gain": round(score - raw_dice, 6),
            "reference": reference_name,
            "corrected_to": corrected_to,
            "raw_target": raw_target,
            "raw_method": raw_method,
            "credited": credited_skills(str(row.get("rationale") or ""), retrieved, tags),
            "skill_ids": retrieved,
            "request": row.get("request"),
            "request_clean": row.get("request_clean"),
            "answer": row.get("answer"),
            "target": target,
            "target_phrase": row.get("target_phrase") or _phrase(target["name"]),
            "style": row.get("style"),
            "vis_cue": row.get("vis_cue"),
            "format_valid": bool(row.get("format_valid")),
            "dataset": self.dataset,
            "image": final.image_path,
            "label": final.label_path,
            "label_values": [int(v) for v in values],
            "label_stamp": final.stamp,
        }

    def _baseline(self, row, volume, reference, proposal, cache) -> tuple[float, str | None, str]:
        """(raw Dice, raw target name, how). `cache`: masks the backbone made for this study, by entry."""
        entry, method = raw_baseline_entry(str(row.get("request") or ""), self.backbone)
        if entry is None:
            return 0.0, None, method
        if entry.id == row["target"].get("id") and entry.name == row["target"].get("name"):
            return dice(proposal, reference), entry.name, method  # the proposed target: this proposal's mask
        key = (entry.id, entry.name, entry.prompt)
        if key not in cache:
            try:
                cache[key] = (self.backbone.segment(volume, entry, self.context(volume).evidence).mask, None)
            except Refusal as refusal:
                cache[key] = (None, refusal.message)
        mask, refused = cache[key]
        if mask is None:
            return 0.0, entry.name, f"{method}; refused: {refused}"
        return dice(mask, reference), entry.name, method

    @staticmethod
    def _skip(final: FinalLabel, row: dict, why: str) -> dict:
        return {"type": "reward_skipped", "trace_id": row["id"], "study": final.study, "reason": why,
                "label_stamp": final.stamp}


def _phrase(name: str) -> str:
    entry = LabelTable({1: name}).entries
    return entry[0].describe() if entry else name
