"""Agreement between two annotators' reads of one study, per structure: Dice and the symmetric mean surface distance
(mm), both from MONAI's metrics (`compute_dice`, `compute_average_surface_distance`).

Structures are matched by name (each read's `label_names`), so two reads agree on "liver" even when they saved it
under different values. A structure only one read has gets Dice 0 and no distance. Each structure is measured on
the bounding box of its voxels in either read plus one voxel, so a small organ on a 512x512x100 CT costs what its
box costs, not the whole grid.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np


def load_read(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A read's label file -> (integer array (X, Y, Z), voxel spacing in mm)."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    return data.astype(np.int32, copy=False), tuple(float(s) for s in image.header.get_zooms()[:3])


def structure_agreement(first: np.ndarray, second: np.ndarray, spacing: tuple[float, float, float]) -> dict:
    """Two boolean masks of one structure on one grid -> {"dice", "msd_mm" (None when either is empty), "voxels":
    [first, second]}."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice

    voxels = [int(first.sum()), int(second.sum())]
    if not voxels[0] and not voxels[1]:
        return {"dice": 1.0, "msd_mm": 0.0, "voxels": voxels}
    if not voxels[0] or not voxels[1]:
        return {"dice": 0.0, "msd_mm": None, "voxels": voxels}
    union = np.argwhere(first | second)
    low = np.maximum(union.min(axis=0) - 1, 0)
    high = union.max(axis=0) + 2
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    a = torch.from_numpy(np.ascontiguousarray(first[box]))[None, None].float()
    b = torch.from_numpy(np.ascontiguousarray(second[box]))[None, None].float()
    dice = float(compute_dice(a, b, include_background=True).item())
    with warnings.catch_warnings():  # MONAI 1.5 warns about an argument its own surface-distance code passes
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        msd = float(compute_average_surface_distance(a, b, include_background=True, symmetric=True,
                                                     spacing=list(spacing)).item())
    return {"dice": round(dice, 4), "msd_mm": None if math.isnan(msd) else round(msd, 3), "voxels": voxels}


def read_agreement(first: str | Path, first_names: dict[str, int], second: str | Path,
                   second_names: dict[str, int]) -> dict:
    """Two reads' label files and their `label_names` ({name: value}) -> {"structures": {name: structure_agreement},
    "mean_dice", "min_dice" (over the structures either read has; None when neither has any)}. ValueError when the
    two reads are not on one grid."""
    a, spacing = load_read(first)
    b, _ = load_read(second)
    if a.shape != b.shape:
        raise ValueError(f"the two reads are on different grids ({a.shape} and {b.shape})")
    structures = {}
    for name in sorted(set(first_names) | set(second_names)):
        in_first = a == int(first_names[name]) if name in first_names else np.zeros(a.shape, bool)
        in_second = b == int(second_names[name]) if name in second_names else np.zeros(b.shape, bool)
        if not in_first.any() and not in_second.any():
            continue  # named by the map, drawn by neither read
        structures[name] = structure_agreement(in_first, in_second, spacing)
    dices = [s["dice"] for s in structures.values()]
    return {"structures": structures, "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
            "min_dice": round(float(min(dices)), 4) if dices else None}
