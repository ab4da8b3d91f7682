"""The qwen-vl reasoner's vision encodings, kept per view: the 8 views of a study are the same for every request on
it, so a second request on the study skips the vision encoder.

`CachedVisionEncoder` wraps Qwen3-VL's vision tower (`model.model.visual`) and is put in its place. Before each
`generate` the engine names the views of the batch (`expect`: one key per image, in the order of `pixel_values`, a
hash of the rendered image). The tower encodes only the views it has not seen, in one call, and the outputs are
put back together in the batch's order. Each image is encoded on its own in the tower (its own attention window),
so an image's encoding does not depend on the others encoded with it.

Shapes: `pixel_values` (sum over images of t*h*w patches, C*T*P*P); outputs per image (t*h*w / merge**2, hidden)
and, for each deepstack level, the same rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch


def image_key(image) -> str:
    """A key for one rendered view (a PIL image): its size, mode and pixel bytes."""
    digest = hashlib.sha1(f"{image.size}|{image.mode}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class CachedVisionEncoder(torch.nn.Module):
    """Qwen3-VL's vision tower with the `size` most recently used views' encodings kept (see module docstring)."""

    def __init__(self, tower: torch.nn.Module, size: int):
        super().__init__()
        self.tower = tower
        self.size = size
        self._items: OrderedDict[str, tuple[torch.Tensor, list[torch.Tensor]]] = OrderedDict()
        self._expected: list[str] | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # what Qwen3-VL reads from its tower besides calling it
    @property
    def dtype(self):
        return self.tower.dtype

    @property
    def spatial_merge_size(self):
        return self.tower.spatial_merge_size

    def expect(self, keys: list[str] | None) -> None:
        """The keys of the images of the next call, in order (None: encode without the cache)."""
        self._expected = list(keys) if keys is not None else None

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        keys, self._expected = self._expected, None
        if keys is None or len(keys) != int(grid_thw.shape[0]) or kwargs:
            return self.tower(pixel_values, grid_thw=grid_thw, **kwargs)
        patches = grid_thw.prod(-1).tolist()
        merge = self.spatial_merge_size ** 2
        starts = [sum(patches[:i]) for i in range(len(patches))]
        with self._lock:
            missing = [i for i, key in enumerate(keys) if key not in self._items]
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.cat([pixel_values[starts[i]:starts[i] + patches[i]] for i in missing])
            embeds, deepstack = self.tower(rows, grid_thw=grid_thw[missing])
            sizes = [patches[i] // merge for i in missing]
            per_image = torch.split(embeds, sizes)
            per_level = [torch.split(level, sizes) for level in deepstack]
            with self._lock:
                for n, i in enumerate(missing):
                    self._items[keys[i]] = (per_image[n], [level[n] for level in per_level])
                    self._items.move_to_end(keys[i])
                fresh = {keys[i]: self._items[keys[i]] for i in missing}
                while len(self._items) > max(self.size, len(keys)):
                    self._items.popitem(last=False)
        else:
            fresh = {}
        with self._lock:
            found = [fresh.get(key) or self._items[key] for key in keys]
        embeds = torch.cat([f[0] for f in found])
        deepstack = [torch.cat([f[1][level] for f in found]) for level in range(len(found[0][1]))]
        return embeds, deepstack

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def stats(self) -> dict:
        return {"items": len(self._items), "hits": self.hits, "misses": self.misses}
