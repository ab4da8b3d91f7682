"""One request end to end, shared by the CLI and the MONAI Label app:

hygiene -> views + evidence -> skill retrieval -> reasoner -> target resolution -> backbone -> trace log.

Per-study work (the 8 slices, the image evidence) is cached by content key; the reasoner, backbone, resolver and
embedding model are built once and reused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seer.cache import BoundedCache
from seer.errors import Refusal
from seer.files import user_cache_dir
from seer.imaging.evidence import ImageEvidence, describe_volume
from seer.imaging.views import SliceViews, take_views
from seer.imaging.volume import Volume, VolumeCache
from seer.loop.trace_log import TraceLog
from seer.reasoning.embeddings import SentenceEmbedder
from seer.reasoning.hygiene import CleanRequest, clean_request
from seer.reasoning.reasoners.base import Reasoner, ReasoningInput
from seer.reasoning.skills import Skill, SkillBank
from seer.reasoning.targets import LabelEntry, LabelTable, Resolution, Resolver
from seer.reasoning.trace import Trace
from seer.segmentation.backbones import Backbone, Progress

logger = logging.getLogger(__name__)

# Kinds of an answer's resolution failure after which the raw request is tried (the answer was unusable text);
# refusals with a reason of their own (out of region, laterality conflict, lesion) stand.
_RETRY_WITH_REQUEST = {"empty", "nonsense", "not_in_vocabulary"}


@dataclass
class StudyContext:
    views: SliceViews
    evidence: ImageEvidence


@dataclass
class Reasoning:
    """Everything up to (and including) target resolution."""

    request: CleanRequest
    trace: Trace
    resolution: Resolution
    skills: list[tuple[Skill, float]]
    style: str
    evidence: ImageEvidence | None
    latencies: dict = field(default_factory=dict)

    @property
    def entry(self) -> LabelEntry | None:
        return self.resolution.entry


@dataclass
class Outcome:
    reasoning: Reasoning
    mask: np.ndarray  # bool (I, J, K) on the study grid
    entry: LabelEntry
    details: dict
    latencies: dict


class SeerPipeline:
    def __init__(
        self,
        reasoner: Reasoner,
        backbone: Backbone | None,
        skill_bank: SkillBank,
        trace_log: TraceLog | None = None,
        embedder: SentenceEmbedder | None = None,
        max_request_chars: int = 1000,
        skills_top_k: int = 3,
        skills_min_score: float = 8.0,
        dataset: str = "",
    ):
        self.reasoner = reasoner
        self.backbone = backbone
        self.skill_bank = skill_bank
        self.trace_log = trace_log
        self.embedder = embedder
        self.max_request_chars = max_request_chars
        self.skills_top_k = skills_top_k
        self.skills_min_score = skills_min_score
        self.dataset = dataset
        self.skill_rounds = None  # seer.loop.skill_rounds.SkillRounds when the pipeline serves a datastore
        self.models: dict[str, str] = {}  # the weights behind the reasoner and backbone, named in each trace row
        self._contexts = BoundedCache("study context", max_items=16)  # 8 slice views + evidence per study
        self._resolver: Resolver | None = None  # for the last label table asked about
        self._lock = threading.Lock()

    # -- shared pieces -------------------------------------------------------------------------------------------
    def context(self, volume: Volume) -> StudyContext:
        def make() -> StudyContext:
            views = take_views(volume.array)
            return StudyContext(views, describe_volume(volume, views))

        return self._contexts.get_or_make(volume.key, make)

    def cache_stats(self) -> dict:
        """Items, hits and size of each in-memory cache the pipeline holds (for /info)."""
        out = {"study_contexts": self._contexts.stats()}
        for name, owner in (("backbone", self.backbone), ("reasoner", self.reasoner)):
            cache = getattr(owner, "cache", None)
            if hasattr(cache, "stats"):
                out[name] = cache.stats()
        return out

    def resolver(self, table: LabelTable) -> Resolver:
        with self._lock:
            if self._resolver is None or self._resolver.table is not table:
                scorer = self.embedder.scorer() if self.embedder is not None else None
                self._resolver = Resolver(table, embed=scorer)
            return self._resolver

    def warm(self, bank: SkillBank | None = None) -> None:
        """Build the retrieval index of `bank` (default: the bank in use) for the backbone's current vocabulary, so
        that no request pays for it (about a second at 10,000 skills)."""
        if self.backbone is not None:
            (bank or self.skill_bank).index(self.resolver(self.backbone.label_table()).parser)

    # -- steps ---------------------------------------------------------------------------------------------------
    def reason(self, raw: object, volume: Volume | None = None, table: LabelTable | None = None) -> Reasoning:
        """Hygiene, evidence, retrieval, reasoning and resolution; never raises for a refusal (see resolution)."""
        t0 = time.perf_counter()
        request = clean_request(raw, self.max_request_chars)
        context = self.context(volume) if volume is not None else None
        if context is not None and self.reasoner.needs_images:
            context.views.images()
        t1 = time.perf_counter()
        table = table if table is not None else (self.backbone.label_table() if self.backbone else LabelTable({}))
        resolver = self.resolver(table)
        evidence = context.evidence if context else None
        region = evidence.region if evidence else None
        parsed = resolver.parse(request.text)
        bank = self.skill_bank  # read once: a round close may swap it while this request runs
        cue = bank.cue(
            request.text, parsed, evidence.vis_cue if evidence else "GENERIC_MEDICAL_IMAGE", region, self.dataset
        )
        skills = bank.retrieve(cue, resolver.parser, self.skills_top_k, self.skills_min_score)
        trace = self.reasoner.reason(
            ReasoningInput(
                request,
                context.views if context else None,
                evidence,
                [s for s, _ in skills],
                resolver.parser,
                study_key=volume.key if volume is not None else None,
                bank_version=bank.version,
            )
        )
        resolution = resolver.resolve(trace.answer, region, required_side=parsed.side, request=parsed)
        if not resolution.ok and resolution.kind in _RETRY_WITH_REQUEST and trace.answer != request.text:
            retry = resolver.resolve(request.text, region)
            if retry.ok or retry.kind not in _RETRY_WITH_REQUEST:
                resolution = retry
        resolution = self._free_text(resolution, trace)
        t2 = time.perf_counter()
        latencies = {"views_s": round(t1 - t0, 4), "reasoning_s": round(t2 - t1, 4)}
        detail = trace.timings
        if detail:
            latencies["reasoner"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in detail.items()}
        return Reasoning(
            request=request,
            trace=trace,
            resolution=resolution,
            skills=skills,
            style=cue.style,
            evidence=evidence,
            latencies=latencies,
        )

    def _free_text(self, resolution: Resolution, trace: Trace) -> Resolution:
        """A text-promptable backbone takes the answer as is where its vocabulary has no entry for it; lesions
        included. Refusals that need no vocabulary (empty, out of region, laterality) stand."""
        backbone = self.backbone
        if resolution.ok or backbone is None or not getattr(backbone, "free_text", False):
            return resolution
        if resolution.kind not in ("not_in_vocabulary", "nonsense", "lesion_not_supported"):
            return resolution
        if trace.answer.lower().startswith("reject"):
            return resolution
        entry = backbone.free_text_entry(trace.answer)
        return Resolution(kind="match", parsed=resolution.parsed, entry=entry, method="free text")

    def run(self, raw: object, volume: Volume, progress: Progress | None = None) -> Outcome:
        """The whole chain up to the mask; raises Refusal (with the reasoning in `details`) or BadRequest."""
        if self.backbone is None:
            raise RuntimeError("this pipeline has no backbone")
        reasoning = self.reason(raw, volume)
        if not reasoning.resolution.ok:
            raise Refusal(
                reasoning.resolution.reason,
                kind=reasoning.resolution.kind,
                details={"reasoning": reasoning},
            )
        t0 = time.perf_counter()
        try:
            segmentation = self.backbone.segment(volume, reasoning.entry, reasoning.evidence, progress)
        except Refusal as refusal:
            refusal.details.setdefault("reasoning", reasoning)
            raise
        latencies = dict(reasoning.latencies, backbone_s=round(time.perf_counter() - t0, 4))
        return Outcome(reasoning, segmentation.mask, reasoning.entry, segmentation.details, latencies)

    # -- durable record ------------------------------------------------------------------------------------------
    def _skill_round(self) -> int | None:
        """The skill round in use (None without skill rounds or while their store cannot be read)."""
        if self.skill_rounds is None:
            return None
        try:
            return self.skill_rounds.active()[0]
        except Exception:  # noqa: BLE001 - a trace is written even when the rounds' store does not answer
            return None

    def record(
        self,
        reasoning: Reasoning | None,
        study: str,
        *,
        raw: object = None,
        proposal: str | Path | None = None,
        voxels: int | None = None,
        refusal: Refusal | Exception | None = None,
        details: dict | None = None,
        latencies: dict | None = None,
    ) -> dict | None:
        """Append one SEER-Trace row to the trace log (when there is one) and return it; the row names the reasoner,
        backbone and skill round that made it."""
        if self.trace_log is None:
            return None
        row: dict = {"type": "trace", "id": uuid.uuid4().hex, "study": study}
        if reasoning is not None:
            trace = reasoning.trace
            entry = reasoning.entry
            row.update(
                request=reasoning.request.raw,
                request_clean=reasoning.request.text,
                removed=list(reasoning.request.removed),
                style=reasoning.style,
                evidence=trace.evidence,
                rationale=trace.rationale,
                answer=trace.answer,
                raw_text=trace.raw_text,
                format_valid=trace.format_valid,
                answer_source=trace.answer_source,
                skill_ids=trace.skill_ids,
                reasoner=trace.reasoner,
                target={"id": entry.id, "name": entry.name, "method": reasoning.resolution.method} if entry else None,
                target_phrase=entry.describe() if entry else None,
                vis_cue=reasoning.evidence.vis_cue if reasoning.evidence else None,
            )
        else:
            text = raw if isinstance(raw, str) else None
            row.update(request=text[:2000] if text else text, request_chars=len(text) if text else 0)
        if refusal is not None:
            row["refused"] = {"kind": getattr(refusal, "kind", type(refusal).__name__), "reason": str(refusal)}
        row.update(
            backbone=getattr(self.backbone, "name", None),
            skill_round=self._skill_round(),
            **({"models": self.models} if self.models else {}),
            proposal=str(proposal) if proposal else None,
            voxels=voxels,
            details=details or {},
            latencies=latencies or {},
        )
        return self.trace_log.append(row)


def build_pipeline(
    settings, state_dir: Path | None, extra_atlases=None, with_backbone: bool = True, registry=None, volumes=None,
    state_db=None,
) -> SeerPipeline:
    """Wire reasoner, backbone, skill bank, trace log and embeddings from typed settings.

    state_dir: the datastore's `.seer` folder (label registry, registrations cache, skill bank, trace log);
    None for one-off CLI use (registrations then go to the user cache, nothing is logged).
    extra_atlases: callable returning more AtlasSource (the app passes the datastore's labelled studies).
    volumes: a VolumeCache to share with the caller, so a labelled study is not held twice (as study and atlas).
    state_db: a seer.state_db.database.StateDatabase that holds the trace log, skill rounds and label ids instead of
    the files under state_dir (see open_state_db).
    """
    from seer.reasoning.reasoners import make_reasoner, resolve_choice
    from seer.segmentation.atlases import bundled_atlases
    from seer.segmentation.backbones import backbone_class
    from seer.segmentation.backbones.atlas import AtlasSettings
    from seer.segmentation.registration import RegistrationSettings

    name, why = resolve_choice(settings.reasoner, settings)
    logger.info("reasoner %s", why)
    reasoner = make_reasoner(name, settings)
    backbone = None
    if with_backbone and settings.backbone != "atlas":
        backbone = _network_backbone(settings, registry or label_registry("voxtell_labels", state_dir, state_db))
    elif with_backbone:
        cls = backbone_class(settings.backbone)
        registry = registry or label_registry("label_table", state_dir, state_db)

        def sources():
            found = bundled_atlases(settings.atlas_dirs())
            return found + (list(extra_atlases()) if extra_atlases else [])

        atlas_settings = AtlasSettings(
            max_atlases=settings.max_atlases,
            cache_mb=settings.atlas_cache_mb,
            registration=RegistrationSettings(
                affine_spacing=settings.affine_spacing,
                demons_spacing=settings.demons_spacing,
                deformable=settings.deformable,
            ),
        )
        backbone = cls(sources, registry, cache_dir=state_dir or user_cache_dir(), settings=atlas_settings,
                       volumes=volumes or VolumeCache(settings.volume_cache_mb))
    rounds = None
    if state_dir or state_db is not None:
        rounds = open_skill_rounds(settings, state_dir, state_db)
        bank = rounds.active()[1]
    elif settings.skills:
        bank = SkillBank.load(settings.skills)
    else:
        bank = SkillBank.starter()
    pipeline = SeerPipeline(
        reasoner=reasoner,
        backbone=backbone,
        skill_bank=bank,
        trace_log=open_trace_log(settings, state_dir, state_db),
        embedder=SentenceEmbedder() if settings.embeddings else None,
        max_request_chars=settings.max_request_chars,
        skills_top_k=settings.skills_top_k,
        skills_min_score=settings.skills_min_score,
        dataset=settings.dataset,
    )
    pipeline.skill_rounds = rounds
    pipeline.models = {k: v for k, v in {
        "reasoner_model": settings.model if name == "qwen-vl" else (settings.endpoint_model if name == "openai"
                                                                   else ""),
        "adapter": settings.adapter if name == "qwen-vl" else "",
        "backbone_model": settings.backbone_model}.items() if v}
    return pipeline


def open_state_db(settings, state_dir: Path | None):
    """The shared state database of the `state_db` setting (None without one), after importing `state_dir`'s
    files into it once (seer.loop.state_import)."""
    if not settings.state_db:
        return None
    from seer.loop.state_import import import_state_files
    from seer.state_db.database import StateDatabase

    db = StateDatabase(settings.state_db)
    if state_dir is not None and state_dir.is_dir():
        import_state_files(db, state_dir)
    return db


def open_trace_log(settings, state_dir: Path | None, state_db=None):
    """The trace log: the database's table, the datastore's traces.jsonl, or None (one-off CLI use)."""
    if state_db is not None:
        from seer.state_db.trace_table import DatabaseTraceLog

        return DatabaseTraceLog(state_db, spool=state_dir / "trace_spool.jsonl" if state_dir else None)
    return TraceLog(state_dir / "traces.jsonl", max_mb=settings.trace_log_mb) if state_dir else None


def label_registry(name: str, state_dir: Path | None, state_db=None):
    """Label-id registry `name` ("label_table" or "voxtell_labels"): the database's, <state>/<name>.json, or one in
    memory."""
    from seer.segmentation.atlases import LabelRegistry

    if state_db is not None:
        from seer.state_db.label_id_table import DatabaseLabelRegistry

        return DatabaseLabelRegistry(state_db, name)
    return LabelRegistry(state_dir / f"{name}.json" if state_dir else None)


def open_skill_rounds(settings, state_dir: Path | None, state_db=None):
    """The datastore's skill rounds (in the state database when given); round 0 is seeded from the `skills`
    setting's file, else the starter skills."""
    from seer.loop.skill_rounds import SkillRounds
    from seer.reasoning.skills import EvolutionSettings

    rules = EvolutionSettings(
        penalty=settings.skill_penalty, harvest_min_dice=settings.skill_harvest_dice,
        harvest_min_gain=settings.skill_harvest_gain, merge_keep=settings.skill_merge_keep,
        cap_fraction=settings.skill_cap_fraction, cap_min=settings.skill_cap_min,
    )
    seed = (lambda: SkillBank.load(settings.skills)) if settings.skills else None
    if state_db is not None:
        from seer.state_db.skill_round_table import DatabaseSkillRounds

        return DatabaseSkillRounds(state_db, state_dir, seed=seed, round_size=settings.skill_round, settings=rules,
                                   dataset=settings.dataset)
    return SkillRounds(state_dir, seed=seed, round_size=settings.skill_round, settings=rules, dataset=settings.dataset)


def _network_backbone(settings, registry):
    """VoxTell or a MONAI bundle, configured from settings."""
    if settings.backbone == "voxtell":
        from seer.segmentation.backbones.voxtell import VoxTellBackbone, VoxTellSettings

        return VoxTellBackbone(VoxTellSettings(
            model_dir=settings.backbone_model, embeddings=settings.voxtell_embeddings,
            text_encoder=settings.voxtell_text_encoder, device=settings.backbone_device, dtype=settings.backbone_dtype,
            sw_batch_size=settings.sw_batch_size or 1, overlap=settings.sw_overlap if settings.sw_overlap >= 0 else 0.5,
        ), registry)
    from seer.segmentation.backbones.monai_bundle import BundleBackbone, BundleSettings

    return BundleBackbone(BundleSettings(
        bundle_dir=settings.backbone_model, device=settings.backbone_device, sw_batch_size=settings.sw_batch_size,
        overlap=settings.sw_overlap, dtype=settings.backbone_dtype, network=settings.bundle_network,
        labels=settings.bundle_labels, roi_size=settings.bundle_roi, preprocessing=settings.bundle_preprocessing,
    ))
