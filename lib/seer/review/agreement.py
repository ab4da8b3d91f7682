"""Agreement between two annotators' reads of one study, per structure: Dice and the symmetric mean surface distance
(mm), both from MONAI's metrics (`compute_dice`, `compute_average_surface_distance`).

Structures are matched by name (each read's `label_names`), so two reads agree on "liver" even when they saved it
under different values. A structure only one read has gets Dice 0 and no distance. Each structure is measured on
the bounding box of its voxels in either read plus one voxel (the boxes of every value found in one pass over each
read), so a small organ on a 512x512x100 CT costs what its box costs, not the whole grid.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def load_read(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A read's label file (any format a save accepts: NIfTI, NRRD, MHA) -> (integer array (Z, Y, X), voxel
    spacing in mm in the same axis order)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(image)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if not np.issubdtype(data.dtype, np.unsignedinteger):  # label files are unsigned; anything else is made so
        data = np.clip(np.rint(data), 0, None).astype(np.int32)
    return data, tuple(float(s) for s in reversed(image.GetSpacing()[:3]))


def structure_agreement(first: np.ndarray, second: np.ndarray, spacing: tuple[float, float, float],
                        cropped: bool = False) -> dict:
    """Two boolean masks of one structure on one grid -> {"dice", "msd_mm" (None when either is empty), "voxels":
    [first, second]}. cropped: the masks are already cut to the structure's box with a margin."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice

    voxels = [int(first.sum()), int(second.sum())]
    if not voxels[0] and not voxels[1]:
        return {"dice": 1.0, "msd_mm": 0.0, "voxels": voxels}
    if not voxels[0] or not voxels[1]:
        return {"dice": 0.0, "msd_mm": None, "voxels": voxels}
    if not cropped:
        union = np.argwhere(first | second)
        low = np.maximum(union.min(axis=0) - 1, 0)
        high = union.max(axis=0) + 2
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        first, second = first[box], second[box]
    a = torch.from_numpy(np.ascontiguousarray(first))[None, None].float()
    b = torch.from_numpy(np.ascontiguousarray(second))[None, None].float()
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
    boxes_a, boxes_b = _boxes(a), _boxes(b)  # one pass over each read, not one per structure

    def measure(name: str) -> dict | None:
        value_a, value_b = first_names.get(name), second_names.get(name)
        box_a = boxes_a.get(int(value_a)) if value_a is not None else None
        box_b = boxes_b.get(int(value_b)) if value_b is not None else None
        if box_a is None and box_b is None:
            return None  # named by the map, drawn by neither read
        box = _union(box_a, box_b, a.shape)
        in_first = a[box] == int(value_a) if box_a is not None else np.zeros(_size(box), bool)
        in_second = b[box] == int(value_b) if box_b is not None else np.zeros(_size(box), bool)
        return structure_agreement(in_first, in_second, spacing, cropped=True)

    names = sorted(set(first_names) | set(second_names))
    # structures side by side: the surface distances' KD-tree queries and torch release the GIL
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        measured = dict(zip(names, pool.map(measure, names), strict=True))
    structures = {name: figures for name, figures in measured.items() if figures is not None}
    dices = [s["dice"] for s in structures.values()]
    return {"structures": structures, "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
            "min_dice": round(float(min(dices)), 4) if dices else None}


def _boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """value -> the bounding box of its voxels (scipy's find_objects: one pass over the array)."""
    from scipy import ndimage

    found = ndimage.find_objects(labels)
    return {value: box for value, box in enumerate(found, start=1) if box is not None}


def _union(first: tuple[slice, ...] | None, second: tuple[slice, ...] | None, shape) -> tuple[slice, ...]:
    """The box holding both boxes, one voxel wider on each side (within the grid)."""
    boxes = [b for b in (first, second) if b is not None]
    return tuple(slice(max(min(b[axis].start for b in boxes) - 1, 0), min(max(b[axis].stop for b in boxes) + 1,
                                                                            shape[axis]))
                 for axis in range(len(shape)))


def _size(box: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in box)
