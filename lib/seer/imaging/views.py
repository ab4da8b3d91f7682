"""SEER's model images: 8 axial slices of the volume, rendered exactly as the published weights expect.

`img[:, :, z]` of the array as nibabel loads it (no reorientation) at
z = round(linspace(round(0.10*(Z-1)), round(0.90*(Z-1)), 8)); per slice: clip to its 0.5 / 99.5 percentiles,
rescale to [0, 1], gamma 1.4 (x ** 1.4), to uint8 (truncating), resize to 448 x 448 bilinear, RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SLICE_COUNT = 8
VIEW_SIZE = 448
GAMMA = 1.4


def slice_indices(depth: int, count: int = SLICE_COUNT) -> list[int]:
    """Axial indices (into the last array axis) of the model's slices for a volume `depth` slices deep."""
    if depth <= 0:
        raise ValueError("empty volume")
    if count == 1:
        return [depth // 2]
    start = int(round((depth - 1) * 0.10))
    stop = int(round((depth - 1) * 0.90))
    return [int(z) for z in np.linspace(start, stop, count).round().astype(int)]


def normalize_slice(slice_2d: np.ndarray) -> np.ndarray:
    """(H, W) float -> (H, W) uint8 with percentile clipping and gamma 1.4."""
    arr = np.asarray(slice_2d, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    values = arr[finite]
    lo, hi = np.percentile(values, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    arr = np.where(finite, arr, lo)
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    return (np.power(arr, GAMMA) * 255.0).astype(np.uint8)


@dataclass
class SliceViews:
    """The 8 raw axial slices (float32, (I, J) each) and, on demand, their 448x448 RGB renderings."""

    indices: list[int]
    slices: list[np.ndarray]
    _images: list | None = field(default=None, repr=False)

    def images(self):
        """PIL RGB images in slice order (rendered once)."""
        if self._images is None:
            from PIL import Image

            rendered = []
            for sl in self.slices:
                gray = Image.fromarray(normalize_slice(sl), mode="L")
                rendered.append(gray.resize((VIEW_SIZE, VIEW_SIZE), Image.Resampling.BILINEAR).convert("RGB"))
            self._images = rendered
        return self._images


def take_views(array: np.ndarray, count: int = SLICE_COUNT) -> SliceViews:
    """array: (I, J, K) as nibabel loads it -> SliceViews of `count` axial slices."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    indices = slice_indices(array.shape[2], count)
    # copies: a view would keep the whole volume alive for as long as the views are cached
    return SliceViews(indices=indices, slices=[np.array(array[:, :, z], dtype=np.float32) for z in indices])
