"""Scoring method `seer`: how much an unlabelled study's label would teach, read off SEER's own reasoning.

For each campaign request (what the team is labelling) the study gets four parts, each in [0, 1]:
- disagreement: phrasings of the request (the request, its skill-bank aliases, requests from the trace log that
  resolved to the same target) are reasoned over the study; 1 - share of the most common outcome (a target, or a
  kind of refusal). Phrasings that land on different targets mean the team's wording is not settled here.
- skill_gap: 1 - (best Dice gain of a retrieved skill covering the request / `covered_gain`), clipped; 1 when no
  proven skill covers it.
- out_of_view: evidence that the target lies outside the scanned region: 1 for an out-of-region refusal or an
  empty backbone mask, else 1 - the backbone's in-view fraction (None without the backbone part).
- uncertainty: the backbone's mean 4·p·(1-p) inside the proposed target (atlas vote fractions, network
  probabilities); None where the backbone cannot say.

score = disagreement + skill_gap + uncertainty (0..3). A study's priority is its best in-view request's score
(0..3); a study whose campaign targets are all out of view is flagged (`in_view` false) and gets its best score
minus 4 (-4..-1), strictly below every in-view study (`study_priority`). Rows carry the skill round, a reasoning
stamp and a backbone stamp: a study whose image, round and stamps are unchanged is not rescored, and only the parts
whose stamp changed are recomputed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from seer.active_learning.study_state import ScoreRow
from seer.errors import Refusal, SeerError
from seer.imaging.volume import Volume

logger = logging.getLogger(__name__)

OUT_OF_VIEW_REFUSALS = {"out_of_region", "empty_mask"}
MAX_SCORE = 3.0  # three parts, each at most 1
# More than the largest score: an out-of-view priority (at most MAX_SCORE - penalty = -1) stays strictly below the
# lowest in-view one (0).
OUT_OF_VIEW_PENALTY = MAX_SCORE + 1.0


def study_priority(rows: list[ScoreRow]) -> tuple[float, str | None, bool]:
    """(priority, its request, in view) of a study from its score rows. In view: some request's target is in view
    (out_of_view < 0.5, or unknown); its priority is the best such score, in 0..MAX_SCORE. Otherwise the best score,
    clipped to 0..MAX_SCORE, minus OUT_OF_VIEW_PENALTY: -4..-1, below every in-view study by construction."""
    in_view_rows = [r for r in rows if (r.out_of_view if r.out_of_view is not None else 0.0) < 0.5]
    if in_view_rows:
        best = max(in_view_rows, key=lambda r: (r.score, r.request))
        return best.score, best.request, True
    best = max(rows, key=lambda r: (r.score, r.request)) if rows else None
    score = min(max(best.score, 0.0), MAX_SCORE) if best else 0.0
    return round(score - OUT_OF_VIEW_PENALTY, 4), best.request if best else None, False


def campaign_from_traces(rows: Iterable[dict], top: int = 3) -> list[str]:
    """The `top` most frequent resolved targets (their request phrase) among the trace rows, most frequent first
    (ties by phrase)."""
    counts = Counter(
        str(row.get("target_phrase") or row["target"]["name"])
        for row in rows
        if row.get("type", "trace") == "trace" and row.get("target") and not row.get("refused")
    )
    return [phrase for phrase, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


@dataclass(frozen=True)
class ScoringSettings:
    phrasings: int = 4
    use_backbone: bool = True
    covered_gain: float = 0.3  # a skill whose Dice gain reaches this fully covers its request (= harvest gain)

    @classmethod
    def from_settings(cls, settings) -> ScoringSettings:
        """From SeerSettings: al_phrasings, al_backbone, skill_harvest_gain."""
        return cls(phrasings=settings.al_phrasings, use_backbone=settings.al_backbone,
                   covered_gain=settings.skill_harvest_gain)


@dataclass(frozen=True)
class Stamps:
    """What a pass's scores depend on: the skill round, one reasoning stamp per campaign request, the backbone
    stamp. Computed once per pass (`StudyScorer.stamps`)."""

    skill_round: int
    reasoning: dict[str, str]
    backbone: str | None

    def reasoning_current(self, row: ScoreRow, image_stamp: str) -> bool:
        return (row.image_stamp == image_stamp and row.skill_round == self.skill_round
                and row.reasoning_stamp == self.reasoning[row.request])

    def backbone_current(self, row: ScoreRow, image_stamp: str) -> bool:
        return row.image_stamp == image_stamp and row.backbone_stamp == self.backbone

    def current(self, row: ScoreRow | None, image_stamp: str) -> bool:
        """Nothing of `row` needs recomputing."""
        return row is not None and self.reasoning_current(row, image_stamp) and self.backbone_current(row, image_stamp)


@dataclass
class StudyScore:
    rows: list[ScoreRow]
    priority: float
    request: str | None
    in_view: bool
    recomputed: dict  # part group -> how many requests recomputed it


class StudyScorer:
    """Scores studies through a SeerPipeline (reasoner, resolver, skill bank, backbone), without writing traces."""

    def __init__(self, pipeline, settings: ScoringSettings | None = None):
        self.pipeline = pipeline
        self.settings = settings or ScoringSettings()

    # -- stamps ----------------------------------------------------------------------------------------------
    def skill_round(self) -> int:
        rounds = self.pipeline.skill_rounds
        return rounds.active()[0] if rounds is not None else 0

    def reasoning_stamp(self, request: str, phrasings: list[str]) -> str:
        """What the reasoning parts depend on besides the skill round: the reasoner, the vocabulary, the request
        and its phrasings, the settings."""
        table = self.pipeline.backbone.label_table() if self.pipeline.backbone else None
        vocabulary = sorted(e.name for e in table.entries) if table is not None else []
        reasoner = self.pipeline.reasoner
        text = repr((reasoner.name, getattr(reasoner, "model_stamp", ""), vocabulary, request, phrasings,
                     self.settings.covered_gain, self.pipeline.skill_bank.version))
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def backbone_stamp(self) -> str | None:
        """What the backbone parts depend on: the backbone and (atlas) its atlas set; None when not used."""
        backbone = self.pipeline.backbone
        if backbone is None or not self.settings.use_backbone:
            return None
        names = backbone.atlas_names() if hasattr(backbone, "atlas_names") else []
        text = repr((backbone.name, getattr(getattr(backbone, "settings", None), "model_dir", ""), sorted(names)))
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def stamps(self, phrasings: dict[str, list[str]]) -> Stamps:
        """The stamps of a pass over the campaign requests (the keys of `phrasings`)."""
        return Stamps(self.skill_round(), {r: self.reasoning_stamp(r, p) for r, p in phrasings.items()},
                      self.backbone_stamp())

    # -- phrasings -------------------------------------------------------------------------------------------
    def phrasings(self, request: str, trace_requests: dict[int, Counter] | None = None) -> list[str]:
        """The request first, then aliases of skills whose target is the request's (most used skills first), then
        trace-log requests resolved to that target (most frequent first); at most `settings.phrasings`."""
        out = [request]
        pipeline = self.pipeline
        if pipeline.backbone is None:
            return out
        resolver = pipeline.resolver(pipeline.backbone.label_table())
        resolution = resolver.resolve(request)
        if not resolution.ok:
            return out
        target = resolution.entry
        parser = resolver.parser
        wanted = (target_tokens := parser.parse(target.describe(), correct_typos=False)).token_set, target_tokens.side
        skills = sorted(pipeline.skill_bank.skills.values(), key=lambda s: (-s.uses, s.skill_id))
        for skill in skills:
            if not skill.canonical:
                continue
            canon = parser.parse(skill.canonical, correct_typos=False)
            if (canon.token_set, canon.side) != wanted:
                continue
            for alias in skill.aliases:
                if alias and alias.lower() not in {p.lower() for p in out}:
                    out.append(alias)
        for text, _ in sorted((trace_requests or {}).get(target.id, Counter()).items(), key=lambda kv: (-kv[1], kv[0])):
            if text.lower() not in {p.lower() for p in out}:
                out.append(text)
        return out[: self.settings.phrasings]

    # -- scoring ---------------------------------------------------------------------------------------------
    def in_view(self, volume: Volume, campaign: list[str]) -> bool:
        """The cheap evidence pass: does the image evidence leave any campaign target in view (no out-of-region
        refusal of the request itself)?"""
        for request in campaign:
            reasoning = self.pipeline.reason(request, volume)
            if reasoning.resolution.ok or reasoning.resolution.kind not in OUT_OF_VIEW_REFUSALS:
                return True
        return False

    def score(self, study: str, image_stamp: str, volume: Volume, campaign: list[str],
              phrasings: dict[str, list[str]], previous: dict[str, ScoreRow], stamps: Stamps) -> StudyScore:
        """Score `study` for every campaign request, reusing from `previous` (request -> row) each part group
        whose stamps did not change."""
        rows: list[ScoreRow] = []
        recomputed = {"reasoning": 0, "backbone": 0}
        for request in campaign:
            old = previous.get(request)
            if old is not None and stamps.reasoning_current(old, image_stamp):
                reasoning = {"disagreement": old.disagreement, "skill_gap": old.skill_gap,
                             **{k: old.details[k] for k in ("outcomes", "target", "target_id", "refused_kind",
                                                              "skills") if k in old.details}}
            else:
                reasoning = self._reasoning_parts(volume, request, phrasings[request])
                recomputed["reasoning"] += 1
            if old is not None and stamps.backbone_current(old, image_stamp) and \
                    old.details.get("target_id") == reasoning.get("target_id"):
                backbone = {"out_of_view": old.out_of_view, "uncertainty": old.uncertainty,
                            **{k: old.details[k] for k in ("backbone",) if k in old.details}}
            else:
                backbone = self._backbone_parts(volume, reasoning)
                recomputed["backbone"] += backbone.pop("ran", 0)
            if reasoning.get("refused_kind") in ("out_of_region",):
                backbone["out_of_view"] = 1.0
            score = reasoning["disagreement"] + reasoning["skill_gap"] + (backbone["uncertainty"] or 0.0)
            details = {k: v for k, v in reasoning.items() if k not in ("disagreement", "skill_gap")}
            if "backbone" in backbone:
                details["backbone"] = backbone["backbone"]
            rows.append(ScoreRow(
                study=study, request=request, skill_round=stamps.skill_round,
                reasoning_stamp=stamps.reasoning[request], backbone_stamp=stamps.backbone, image_stamp=image_stamp,
                disagreement=round(reasoning["disagreement"], 4), skill_gap=round(reasoning["skill_gap"], 4),
                out_of_view=backbone["out_of_view"], uncertainty=backbone["uncertainty"],
                score=round(score, 4), details=details,
            ))
        priority, request, in_view = study_priority(rows)
        return StudyScore(rows, priority, request, in_view, recomputed)

    def _reasoning_parts(self, volume: Volume, request: str, phrasings: list[str]) -> dict:
        pipeline = self.pipeline
        outcomes = []
        first = None
        for text in phrasings:
            try:
                reasoning = pipeline.reason(text, volume)
            except SeerError as exc:  # an unusable phrasing counts as a refusal of its own kind
                outcomes.append({"phrasing": text, "outcome": f"refused:{type(exc).__name__}"})
                continue
            if first is None:
                first = reasoning
            ok = reasoning.resolution.ok
            outcomes.append({"phrasing": text,
                             "outcome": reasoning.entry.name if ok else f"refused:{reasoning.resolution.kind}"})
        counts = Counter(o["outcome"] for o in outcomes)
        disagreement = 1.0 - max(counts.values()) / len(outcomes) if outcomes else 0.0
        gains = [skill.dice_gain for skill, _ in (first.skills if first else [])]
        best_gain = max(gains, default=0.0)
        skill_gap = 1.0 - min(max(best_gain, 0.0) / self.settings.covered_gain, 1.0)
        parts = {"disagreement": disagreement, "skill_gap": skill_gap, "outcomes": outcomes,
                 "skills": [{"id": s.skill_id, "dice_gain": s.dice_gain} for s, _ in (first.skills if first else [])]}
        if first is not None and first.resolution.ok:
            parts["target"] = first.entry.name
            parts["target_id"] = first.entry.id
        elif first is not None:
            parts["refused_kind"] = first.resolution.kind
        return parts

    def _backbone_parts(self, volume: Volume, reasoning: dict) -> dict:
        backbone = self.pipeline.backbone
        if backbone is None or not self.settings.use_backbone or "target_id" not in reasoning:
            return {"out_of_view": None, "uncertainty": None}
        entry = backbone.label_table().by_id.get(reasoning["target_id"])
        if entry is None:
            return {"out_of_view": None, "uncertainty": None}
        evidence = self.pipeline.context(volume).evidence
        try:
            segmentation = backbone.segment(volume, entry, evidence, progress=lambda message: None)
        except Refusal as refusal:
            if refusal.kind in OUT_OF_VIEW_REFUSALS:
                return {"out_of_view": 1.0, "uncertainty": None, "ran": 1,
                        "backbone": {"refused": refusal.kind, "reason": refusal.message}}
            return {"out_of_view": None, "uncertainty": None, "ran": 1,
                    "backbone": {"refused": refusal.kind, "reason": refusal.message}}
        details = segmentation.details
        fraction = details.get("in_view_fraction")
        return {
            "out_of_view": None if fraction is None else round(1.0 - float(fraction), 4),
            "uncertainty": details.get("uncertainty"),
            "ran": 1,
            "backbone": {"voxels": details.get("voxels"), "in_view_fraction": fraction},
        }


def trace_requests_by_target(rows: Iterable[dict]) -> dict[int, Counter]:
    """target id -> Counter of the (cleaned) requests that resolved to it, from trace rows."""
    out: dict[int, Counter] = {}
    for row in rows:
        if row.get("type", "trace") != "trace" or not row.get("target") or row.get("refused"):
            continue
        text = str(row.get("request_clean") or row.get("request") or "").strip()
        if text:
            out.setdefault(int(row["target"]["id"]), Counter())[text] += 1
    return out


Loader = Callable[[str], Volume]
