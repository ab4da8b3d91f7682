"""The offline default backbone: multi-atlas label propagation with SimpleITK.

For a target, every atlas holding it (bundled atlases and labelled datastore studies; never the study itself) is
registered to the study at reduced resolution (seer.segmentation.registration), its binary target mask is warped onto the
study's own grid with linear interpolation, and the warped masks are averaged and thresholded at 0.5. Full
resolution resampling happens only inside the target's bounding box, found first on the coarse grid.

Registrations are cached per (atlas content, study content, settings) in memory and on disk, so a second request
on the same study, for any target of the same atlases, skips registration.

Memory: ranking needs only a small summary of each atlas (evidence, voxel count per label value), kept for every
atlas; voxels are loaded after ranking, for the chosen atlases only. Loaded atlases, downsampled images, target
masks and in-memory registrations share one cache bounded in bytes (`AtlasSettings.cache_mb`); what it evicts comes
back from disk (registrations) or is loaded again.

SimpleITK rather than itk-elastix or ANTsPy: it is already installed with MONAI Label, its Mattes-MI affine and
fast symmetric-forces demons run in a few seconds on 2 cores at 2-3 mm, and its resampler takes composite
transforms directly. (B-spline registration in SimpleITK took 57-100 s on the same pair: too slow for a request.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from seer.cache import BoundedCache, nbytes
from seer.errors import Refusal
from seer.imaging.evidence import ImageEvidence, describe_volume
from seer.imaging.volume import Volume, VolumeCache, array_to_sitk, load_labels
from seer.reasoning.targets import LabelEntry, LabelTable
from seer.segmentation.atlases import AtlasSource, LabelRegistry
from seer.segmentation.backbones import Progress, Segmentation, soft_uncertainty
from seer.segmentation.registration import (
    Prepared,
    Registration,
    RegistrationSettings,
    load_registration,
    prepare,
    register,
    save_registration,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AtlasSettings:
    max_atlases: int = 5
    threshold: float = 0.5
    cache_mb: float = 2048.0  # loaded atlases, prepared images, target masks, registrations
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)


@dataclass(frozen=True)
class AtlasSummary:
    """What ranking an atlas needs, without its voxels (a few hundred bytes; kept for every atlas seen)."""

    source: AtlasSource
    stamp: tuple  # (image mtime_ns, label mtime_ns)
    volume_key: str  # content key of the atlas image (an atlas is never used on its own image)
    evidence: ImageEvidence
    voxel_mm3: float
    counts: dict  # label value -> voxels holding it

    def voxels(self, values: list[int]) -> int:
        return sum(self.counts.get(v, 0) for v in values)


@dataclass
class LoadedAtlas:
    summary: AtlasSummary
    volume: Volume
    labels: np.ndarray  # (I, J, K) integer label values (uint8/uint16)

    @property
    def source(self) -> AtlasSource:
        return self.summary.source

    @property
    def evidence(self) -> ImageEvidence:
        return self.summary.evidence

    @property
    def key(self) -> tuple:
        return (self.source.name, self.summary.stamp)


class AtlasBackbone:
    """Multi-atlas segmentation. `sources` lists the current atlases (called on `refresh`)."""

    name = "atlas"

    def __init__(
        self,
        sources: Callable[[], list[AtlasSource]],
        registry: LabelRegistry | None = None,
        cache_dir: str | os.PathLike | None = None,
        settings: AtlasSettings | None = None,
        volumes: VolumeCache | None = None,
    ):
        self._list_sources = sources
        self.registry = registry or LabelRegistry()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.settings = settings or AtlasSettings()
        self.volumes = volumes or VolumeCache()
        self._lock = threading.RLock()
        self._summaries = BoundedCache("atlas summary", max_items=8192)
        # one byte-bounded cache for everything heavy, keyed by kind first
        self.cache = BoundedCache("atlas", max_bytes=int(self.settings.cache_mb * 2**20), sizeof=_sizeof)
        self._sources: list[AtlasSource] = []
        self._values: dict[str, dict[int, list[int]]] = {}
        self._table = LabelTable({})
        self.refresh()

    # -- vocabulary ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-list atlas sources and rebuild the label table (new names get new stable ids)."""
        sources = self._list_sources()
        names = sorted({n for s in sources for n in s.names.values()})
        ids = self.registry.ensure(names)
        values: dict[str, dict[int, list[int]]] = {}
        for source in sources:
            per_entry: dict[int, list[int]] = {}
            for value, name in source.names.items():
                per_entry.setdefault(ids[name], []).append(value)
            values[source.name] = per_entry
        present = {i for per in values.values() for i in per}
        aliases: dict[str, list[str]] = {}  # a label's aliases from every atlas that names it
        for source in sources:
            for value, found in source.aliases.items():
                if value in source.names:
                    aliases.setdefault(source.names[value], []).extend(a for a in found
                                                                       if a not in aliases.get(source.names[value], []))
        table = {i: {"name": n, "aliases": aliases[n]} if aliases.get(n) else n
                 for i, n in self.registry.table().items() if i in present}
        with self._lock:
            self._sources = sources
            self._values = values
            self._table = LabelTable(table)
        logger.info("atlas backbone: %d atlases, %d targets", len(sources), len(table))

    def label_table(self) -> LabelTable:
        return self._table

    def atlas_names(self) -> list[str]:
        with self._lock:
            return [s.name for s in self._sources]

    # -- segmentation ----------------------------------------------------------------------------------------
    def segment(
        self, volume: Volume, entry: LabelEntry, evidence: ImageEvidence, progress: Progress | None = None
    ) -> Segmentation:
        say = progress or (lambda message: logger.info(message))
        started = time.perf_counter()
        with self._lock:  # one consistent snapshot: a refresh swaps both while requests run
            sources, all_values = self._sources, self._values
        holders = [s for s in sources if entry.id in all_values.get(s.name, {})]
        if not holders:
            raise Refusal(f"No atlas holds '{entry.name}'.", kind="no_atlas")
        loaded = [self._summary(s) for s in holders]
        loaded = [a for a in loaded if a is not None and a.volume_key != volume.key]
        if not loaded:
            raise Refusal(
                f"The only atlas holding '{entry.name}' is this study itself; label '{entry.name}' on another study "
                "so that it can serve as an atlas.",
                kind="no_atlas",
            )
        compatible = [a for a in loaded if _region_ok(a.evidence.region, evidence.region)]
        if not compatible:
            regions = sorted({a.evidence.region or "unknown" for a in loaded})
            raise Refusal(
                f"Out of region: the atlases holding '{entry.name}' show the {', '.join(regions)} region but this "
                f"study shows the {evidence.region}.",
                kind="out_of_region",
            )
        # a label map may name structures its volume does not hold (a crop, a partial label): those atlases are
        # not holders of this target
        compatible = [a for a in compatible if a.voxels(all_values[a.source.name][entry.id]) > 0]
        if not compatible:
            raise Refusal(
                f"The atlases that name '{entry.name}' hold no voxel of it (their label maps list it, their volumes "
                "do not contain it); label it on a study that shows it.",
                kind="no_atlas",
            )
        chosen = [self._load(a.source, a.stamp) for a in _rank(compatible, evidence)[: self.settings.max_atlases]]
        chosen = [a for a in chosen if a is not None]
        if not chosen:
            raise Refusal(f"The atlases holding '{entry.name}' could not be read (see the server log).", kind="no_atlas")
        study_prepared = self._prepare_study(volume, evidence)
        probability = np.zeros(volume.shape, dtype=np.float32)
        used: list[dict] = []
        for n, atlas in enumerate(chosen, start=1):
            same_modality = atlas.evidence.modality == evidence.modality
            reg, how = self._registration(atlas, volume, study_prepared, same_modality, n, len(chosen), say)
            t0 = time.perf_counter()
            self._accumulate(probability, atlas, all_values[atlas.source.name][entry.id], reg, volume, study_prepared)
            used.append(
                {
                    "atlas": atlas.source.name,
                    "origin": atlas.source.origin,
                    "registration": how,
                    "deformable": reg.deformable,
                    "registration_s": round(reg.seconds, 2),
                    "warp_s": round(time.perf_counter() - t0, 3),
                }
            )
        probability /= len(chosen)
        mask = probability >= self.settings.threshold
        # the atlases' target volume (mm^3, mean over the chosen) against what their warps put inside this grid
        expected = np.mean([a.summary.voxels(all_values[a.source.name][entry.id]) * a.summary.voxel_mm3
                            for a in chosen])
        in_view = float(probability.sum(dtype=np.float64)) * volume.voxel_mm3 / max(float(expected), 1e-6)
        if not mask.any():
            raise Refusal(
                f"'{entry.name}' was not found inside this study's field of view after registering "
                f"{len(chosen)} atlas(es); the structure may lie outside the scanned region.",
                kind="empty_mask",
                details={"in_view_fraction": round(min(in_view, 1.0), 4)},
            )
        return Segmentation(
            mask=mask,
            details={"atlases": used, "voxels": int(mask.sum()), "seconds": round(time.perf_counter() - started, 3),
                     "uncertainty": soft_uncertainty(probability), "in_view_fraction": round(min(in_view, 1.0), 4)},
        )

    # -- internals -------------------------------------------------------------------------------------------
    def _summary(self, source: AtlasSource) -> AtlasSummary | None:
        """The atlas's summary for ranking (computed once per file version; loads the atlas that one time)."""
        try:
            stamp = (os.stat(source.image_path).st_mtime_ns, os.stat(source.label_path).st_mtime_ns)
        except OSError:
            logger.warning("atlas %s: files vanished", source.name)
            return None

        def make() -> AtlasSummary | None:
            atlas = self._load(source, stamp)  # cached too: a chosen atlas is not read twice
            return atlas.summary if atlas is not None else None

        return self._summaries.get_or_make((source, stamp), make)

    def _load(self, source: AtlasSource, stamp: tuple) -> LoadedAtlas | None:
        """The atlas's voxels, from the cache or its files (None when they changed or became unreadable)."""
        return self.cache.get_or_make(("atlas", source.name, stamp), lambda: self._read(source, stamp))

    def _read(self, source: AtlasSource, stamp: tuple) -> LoadedAtlas | None:
        try:
            image = self.volumes.get(source.image_path, source.name)
            labels, _ = load_labels(source.label_path, source.name + " labels")
        except Exception as exc:  # noqa: BLE001 - an unreadable atlas is skipped, not fatal
            logger.warning("atlas %s skipped: %s", source.name, getattr(exc, "message", exc))
            return None
        if labels.shape != image.shape:
            logger.warning("atlas %s skipped: label grid %s differs from image %s", source.name,
                           labels.shape, image.shape)
            return None
        values, counts = np.unique(labels, return_counts=True)
        summary = AtlasSummary(source, stamp, image.key, describe_volume(image), image.voxel_mm3,
                               {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0})
        return LoadedAtlas(summary, image, labels)

    def _prepare_study(self, volume: Volume, evidence: ImageEvidence) -> Prepared:
        return self.cache.get_or_make(
            ("prepared", volume.key, self._settings_key()),
            lambda: prepare(volume.to_sitk(), evidence.modality, self.settings.registration),
        )

    def _prepare_atlas(self, atlas: LoadedAtlas) -> Prepared:
        def make() -> Prepared:
            labels = array_to_sitk((atlas.labels > 0).astype(np.uint8), atlas.volume.affine)
            return prepare(atlas.volume.to_sitk(), atlas.evidence.modality, self.settings.registration, labels)

        return self.cache.get_or_make(("prepared-atlas", *atlas.key, self._settings_key()), make)

    def _settings_key(self) -> str:
        return hashlib.sha1(repr(asdict(self.settings.registration)).encode()).hexdigest()[:8]

    def _registration(self, atlas, volume, study_prepared, same_modality, n, total, say) -> tuple[Registration, str]:
        """The pair's registration from memory, disk or computed; concurrent requests on one pair compute it once
        (the others wait and share it)."""
        key = (atlas.volume.key, volume.key, self._settings_key(), same_modality)
        folder = self.cache_dir / "registrations" / "-".join(str(k) for k in key) if self.cache_dir else None
        how = ["memory cache"]  # what the thread that made it did; a waiter shares the result from memory

        def make() -> Registration:
            if folder is not None:
                reg = load_registration(folder)
                if reg is not None:
                    how[0] = "disk cache"
                    return reg
            say(f"registering atlas {n}/{total} '{atlas.source.name}' to the study (first request on this pair)")
            reg = register(study_prepared, self._prepare_atlas(atlas), same_modality, self.settings.registration)
            say(
                f"registered atlas {n}/{total} '{atlas.source.name}' in {reg.seconds:.1f} s "
                f"({'affine + demons' if reg.deformable else 'affine'}, start: {reg.init})"
            )
            if folder is not None:
                try:
                    save_registration(reg, folder)
                except (OSError, RuntimeError) as exc:
                    logger.warning("could not cache registration in %s: %s", folder, exc)
            how[0] = "computed"
            return reg

        reg = self.cache.get_or_make(("registration", *key), make)
        return reg, how[0]

    def _binary(self, atlas: LoadedAtlas, values: list[int]) -> sitk.Image:
        """The atlas target as a float32 image cropped to its bounding box (+2 voxels), cached per target."""

        def make() -> sitk.Image:
            mask = np.isin(atlas.labels, values)
            idx = np.argwhere(mask)
            lo = np.maximum(idx.min(axis=0) - 2, 0)
            hi = np.minimum(idx.max(axis=0) + 3, mask.shape)
            block = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
            return array_to_sitk(block, atlas.volume.affine, offset=lo)

        return self.cache.get_or_make(("binary", *atlas.key, tuple(sorted(values))), make)

    def _accumulate(self, probability, atlas, values, reg, volume: Volume, study_prepared: Prepared) -> None:
        """Add the atlas's warped target probability to `probability` (I, J, K), full resolution in its bbox."""
        binary = self._binary(atlas, values)
        coarse = sitk.Resample(binary, study_prepared.coarse, reg.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        hits = np.argwhere(sitk.GetArrayViewFromImage(coarse) > 0.02)  # (z, y, x) on the coarse grid
        if hits.size == 0:
            return
        study = volume.to_sitk()
        lo_hi = np.array([study.TransformPhysicalPointToContinuousIndex(p) for p in _box_corners(coarse, hits)])
        lo = np.maximum(np.floor(lo_hi.min(axis=0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(lo_hi.max(axis=0)).astype(int) + 2, np.array(study.GetSize()))
        if np.any(hi <= lo):
            return
        size = [int(v) for v in hi - lo]
        reference = sitk.Image(size, sitk.sitkUInt8)
        reference.SetSpacing(study.GetSpacing())
        reference.SetDirection(study.GetDirection())
        reference.SetOrigin(study.TransformIndexToPhysicalPoint([int(v) for v in lo]))
        warped = sitk.Resample(binary, reference, reg.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        block = sitk.GetArrayViewFromImage(warped).transpose(2, 1, 0)  # -> (I, J, K)
        probability[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += block


def _box_corners(image: sitk.Image, hits: np.ndarray) -> list:
    """Physical corners of the (z, y, x) index box of `hits` on `image`, padded by one voxel."""
    lo = hits.min(axis=0) - 1
    hi = hits.max(axis=0) + 1
    corners = []
    for z in (lo[0], hi[0]):
        for y in (lo[1], hi[1]):
            for x in (lo[2], hi[2]):
                corners.append(image.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)]))
    return corners


def _sizeof(value) -> int:
    if isinstance(value, LoadedAtlas):  # its image as the volume cache charges it, and its label array
        return value.volume.held_nbytes + int(value.labels.nbytes)
    return nbytes(value)


def _region_ok(atlas_region: str | None, study_region: str | None) -> bool:
    return atlas_region is None or study_region is None or atlas_region == study_region


def _rank(atlases: list[AtlasSummary], evidence: ImageEvidence) -> list[AtlasSummary]:
    """Same modality first, then the most similar field of view (log extent ratio), then name."""

    def cost(atlas: AtlasSummary):
        ratio = np.abs(np.log(np.array(atlas.evidence.extent_mm) / np.maximum(evidence.extent_mm, 1e-3))).sum()
        return (atlas.evidence.modality != evidence.modality, float(ratio), atlas.source.name)

    return sorted(atlases, key=cost)

