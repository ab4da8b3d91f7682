"""Objective image evidence from the 8 model slices and the header: modality, body region, field of view.

This is what a deployed system knows at request time besides the raw text; skill retrieval and out-of-region
refusals use it, never ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seer.imaging.views import SliceViews

HEAD, BODY = "head", "body"  # the coarse regions an image shows (the lexicon files its structures under them)

# Coarse visual cue classes of SEER's skill bank. Brain images map to BRAIN_LESION, the name the published bank
# uses for its brain datasets.
CUE_BRAIN = "BRAIN_LESION"
CUE_PELVIS = "PELVIC_BONES"
CUE_ABDOMEN = "ABDOMINAL_ORGANS"
CUE_GENERIC = "GENERIC_MEDICAL_IMAGE"


@dataclass(frozen=True)
class ImageEvidence:
    """What the image shows, as far as intensities and geometry tell.

    modality: "CT" | "MR"; region: "head" | "body" | None (unsure); vis_cue: skill-bank cue class;
    shape (voxels), spacing and extent (mm) along the array axes; text: one objective paragraph.
    """

    modality: str
    region: str | None
    vis_cue: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    extent_mm: tuple[float, float, float]
    axcodes: str
    stats: dict
    text: str


def describe(views: SliceViews, shape, spacing, axcodes: str, affine: np.ndarray | None = None) -> ImageEvidence:
    """Guess modality and region from the raw slices (no ground truth, no labels)."""
    values = np.concatenate([s[np.isfinite(s)].ravel() for s in views.slices]).astype(np.float32)
    if values.size == 0:
        values = np.zeros(1, dtype=np.float32)
    if values.size > 400_000:
        values = values[:: values.size // 400_000 + 1]
    p01, p50, p99 = (float(v) for v in np.percentile(values, (1, 50, 99)))
    vmin, vmax = float(values.min()), float(values.max())
    air = float((values < -900).mean())
    negative = float((values < -50).mean())
    # CT: air at -1000 HU, or (inside the body, e.g. a crop) a sizeable share of fat-range negatives on a
    # Hounsfield-sized range; MR is non-negative or, when normalised, spans a few units only.
    is_ct = (vmin <= -500 and p01 < -300 and vmax > 200) or (negative > 0.03 and p99 - p01 > 300 and vmax > 150)
    extent = tuple(float(n) * float(s) for n, s in zip(shape, spacing, strict=True))
    stats = {"min": vmin, "p01": p01, "median": p50, "p99": p99, "max": vmax, "air_fraction": round(air, 3)}
    if is_ct:
        region, cue, detail = _ct_region(views, extent, affine, stats)
        modality = "CT"
        intensity = f"Hounsfield-like values from {vmin:.0f} to {vmax:.0f}"
    else:
        region, cue, detail = _mr_region(values, extent, stats)
        modality = "MR"
        negative = "no negative values" if vmin >= 0 else f"minimum {vmin:.0f}"
        intensity = f"arbitrary-unit intensities {vmin:.0f} to {vmax:.0f} ({negative}), no air at -1000"
    n = ", ".join(str(int(s)) for s in shape)
    sp = "x".join(f"{s:.2g}" for s in spacing)
    fov = "x".join(f"{e:.0f}" for e in extent)
    text = (
        f"{modality}-like volume: {intensity}. Grid {n} voxels at {sp} mm (field of view {fov} mm, {axcodes}). "
        f"{len(views.indices)} axial slices reviewed at z={views.indices[0]}..{views.indices[-1]} of {shape[2]}. "
        f"{detail}"
    )
    return ImageEvidence(
        modality=modality,
        region=region,
        vis_cue=cue,
        shape=tuple(int(s) for s in shape),
        spacing=tuple(float(s) for s in spacing),
        extent_mm=extent,
        axcodes=axcodes,
        stats=stats,
        text=text,
    )


def describe_volume(volume, views: SliceViews | None = None) -> ImageEvidence:
    """describe() for a seer.imaging.volume.Volume, taking its 8 slices unless `views` already holds them."""
    from seer.imaging.views import take_views

    views = views if views is not None else take_views(volume.array)
    return describe(views, volume.shape, volume.spacing, volume.axcodes, volume.affine)


def _ct_region(views: SliceViews, extent, affine, stats) -> tuple[str | None, str, str]:
    body_fat, body_bone, body_sizes = [], [], []
    for sl in views.slices:
        body = sl > -500
        n = int(body.sum())
        if n < 50:
            continue
        vals = sl[body]
        body_fat.append(float(((vals > -150) & (vals < -30)).mean()))
        body_bone.append(float((vals > 250).mean()))
        body_sizes.append(n)
    if not body_sizes:
        return None, CUE_GENERIC, "Mostly air; body region unclear."
    fat = float(np.mean(body_fat))
    bone = float(np.mean(body_bone))
    stats.update(fat_fraction=round(fat, 3), bone_fraction=round(bone, 3))
    inplane = max(extent[0], extent[1])
    if fat < 0.04 and bone > 0.08 and inplane < 300:
        return HEAD, CUE_BRAIN, f"Little fat ({fat:.0%}) and a bone ring ({bone:.0%} bone): consistent with the head."
    # Which slice is inferior: the one with the lowest S coordinate.
    lower = views.slices[0]
    if affine is not None and affine[2, 2] < 0:
        lower = views.slices[-1]
    lower_body = lower > -500
    lower_bone = float((lower[lower_body] > 250).mean()) if lower_body.sum() > 50 else 0.0
    cue = CUE_PELVIS if lower_bone > 0.10 else CUE_ABDOMEN
    where = "pelvis" if cue == CUE_PELVIS else "abdomen"
    return BODY, cue, (
        f"Body outline with {fat:.0%} fat and {bone:.0%} bone in the body: consistent with the body trunk "
        f"(lowest slice suggests the {where})."
    )


def _mr_region(values, extent, stats) -> tuple[str | None, str, str]:
    inplane = max(extent[0], extent[1])
    foreground = float((values > 0.1 * np.percentile(values, 99)).mean())
    stats.update(foreground_fraction=round(foreground, 3))
    if inplane <= 280 and extent[2] >= 100 and max(extent) <= 300:
        return HEAD, CUE_BRAIN, f"Compact field of view ({inplane:.0f} mm in plane): consistent with a head/brain study."
    if inplane > 300:
        return BODY, CUE_ABDOMEN, f"Wide field of view ({inplane:.0f} mm in plane): consistent with the body trunk."
    return None, CUE_GENERIC, "Field of view does not tell the body region."
