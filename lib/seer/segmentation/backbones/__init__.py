"""Backbones execute a resolved target on a study. One file per backbone; register it here.

Protocol:
- `name`: the name used in conf, CLI flags and /info.
- `label_table() -> LabelTable`: the targets it can segment, with the stable ids written into masks.
- `segment(volume, entry, evidence, progress) -> Segmentation`: a mask on the volume's own grid, or a Refusal.
- `refresh()`: re-read whatever defines the vocabulary (atlases); a no-op for fixed label tables.
- optional `free_text` + `free_text_entry(answer)`: a text-promptable backbone that takes the SEER answer as is
  when its vocabulary does not hold it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from seer.errors import BadRequest
from seer.imaging.evidence import ImageEvidence
from seer.imaging.volume import Volume
from seer.reasoning.targets import LabelEntry, LabelTable

BACKBONES = {
    "atlas": "seer.segmentation.backbones.atlas:AtlasBackbone",
    "voxtell": "seer.segmentation.backbones.voxtell:VoxTellBackbone",
    "bundle": "seer.segmentation.backbones.monai_bundle:BundleBackbone",
}

Progress = Callable[[str], None]


@dataclass
class Segmentation:
    """mask: bool (I, J, K) on the study's grid; details: what was used (atlases, timings, cache hits) and, where
    the backbone can tell, `uncertainty` (see `soft_uncertainty`) and `in_view_fraction` (the share of the target's
    expected volume that lies inside the study's field of view)."""

    mask: np.ndarray
    details: dict = field(default_factory=dict)


class Backbone(Protocol):
    name: str

    def label_table(self) -> LabelTable: ...

    def segment(
        self, volume: Volume, entry: LabelEntry, evidence: ImageEvidence, progress: Progress | None = None
    ) -> Segmentation: ...


def soft_uncertainty(probability) -> float | None:
    """Mean 4·p·(1-p) over the voxels where the target probability p exceeds 0.02: 0 when every such voxel is sure
    (p near 0 or 1), 1 when all sit at 0.5. p is an atlas vote fraction or a network's probability (numpy array or
    torch tensor, any shape). None when no voxel qualifies."""
    candidate = probability[probability > 0.02]
    count = candidate.numel() if hasattr(candidate, "numel") else candidate.size
    if count == 0:
        return None
    value = (4.0 * candidate * (1.0 - candidate)).mean()
    return round(float(value), 4)


def backbone_class(name: str):
    if name not in BACKBONES:
        raise BadRequest(f"Unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}.")
    module_name, class_name = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
