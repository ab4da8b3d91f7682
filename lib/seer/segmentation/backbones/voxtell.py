"""VoxTell (free-text 3D segmentation, the SEER paper's backbone) through a MONAI inferer.

The network is VoxTell's own model class built from the model folder's `plans.json` exactly as the `voxtell`
package builds it, with the weights of `fold_0/checkpoint_final.pth`. Prediction follows VoxTell's predictor:
the volume is reoriented to RAS and laid out (S, A, R) as nnU-Net reads it, cropped to its non-zero box and
z-scored; MONAI's `SlidingWindowInferer` runs patches of the plans' size with half-patch overlap and Gaussian
weighting; logits > 0 (sigmoid > 0.5) give one mask per prompt; masks go back into the box and onto the study's
own grid and orientation.

Text prompts are embedded from VoxTell's precomputed embedding bank; a prompt missing from the bank needs its
text encoder (Qwen3-Embedding-4B, instruction-wrapped, last-token pooled), which is used only when present locally.
With the bank alone the backbone's vocabulary is the bank's prompts; with the encoder it takes free text.
"""

from __future__ import annotations

import logging
import os
import pydoc
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seer.cache import BoundedCache
from seer.devices import select_device
from seer.errors import BadRequest, Refusal
from seer.imaging.evidence import ImageEvidence
from seer.imaging.volume import Volume
from seer.reasoning.targets import LabelEntry, LabelTable
from seer.segmentation.atlases import LabelRegistry
from seer.segmentation.backbones import Progress, Segmentation, soft_uncertainty

logger = logging.getLogger(__name__)

TEXT_EMBEDDING_DIM = 2560  # fixed by VoxTell's predictor
TEXT_INSTRUCTION = "Given an anatomical term query, retrieve the precise anatomical entity and location it represents"


@dataclass(frozen=True)
class VoxTellSettings:
    model_dir: str
    embeddings: str = ""  # .npz bank (labels, embeddings); default: text_embeddings.npz in or beside model_dir
    text_encoder: str = "Qwen/Qwen3-Embedding-4B"  # used only when it is on this machine
    device: str = "auto"
    dtype: str = "auto"  # auto: bfloat16 autocast on GPU, float32 on CPU
    sw_batch_size: int = 1
    overlap: float = 0.5


def load_network(model_dir: str | os.PathLike):
    """VoxTell's network from `plans.json` + `fold_0/checkpoint_final.pth`; returns (network, patch_size)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from voxtell.model.voxtell_model import VoxTellModel

    model_dir = Path(model_dir)
    plans_path = model_dir / "plans.json"
    checkpoint_path = model_dir / "fold_0" / "checkpoint_final.pth"
    if not plans_path.exists() or not checkpoint_path.exists():
        raise BadRequest(
            f"'{model_dir}' is not a VoxTell model folder: it needs plans.json and fold_0/checkpoint_final.pth "
            "(python main.py download-weights --voxtell fetches the published one)."
        )
    config = load_json(str(plans_path))["configurations"]["3d_fullres"]
    arch_kwargs = dict(config["architecture"]["arch_kwargs"])
    for key in config["architecture"]["_kw_requires_import"]:
        if arch_kwargs[key] is not None:
            arch_kwargs[key] = pydoc.locate(arch_kwargs[key])
    network = VoxTellModel(
        input_channels=1, **arch_kwargs, decoder_layer=4, text_embedding_dim=TEXT_EMBEDDING_DIM,
        num_maskformer_stages=5, num_heads=32, query_dim=2048, project_to_decoder_hidden_dim=2048,
        deep_supervision=False,
    )
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network.eval(), tuple(int(p) for p in config["patch_size"])


def load_embedding_bank(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{lowercase prompt: vector} from VoxTell's .npz layout (labels, embeddings)."""
    with np.load(path, allow_pickle=False) as data:
        labels, vectors = data["labels"], data["embeddings"]
    if vectors.ndim != 2 or vectors.shape[1] != TEXT_EMBEDDING_DIM:
        raise BadRequest(f"Embedding bank {path} has shape {vectors.shape}; VoxTell needs (N, {TEXT_EMBEDDING_DIM}).")
    return {str(label).lower(): vectors[i] for i, label in enumerate(labels)}


def find_embedding_bank(settings: VoxTellSettings) -> Path | None:
    if settings.embeddings:
        path = Path(settings.embeddings)
        if not path.exists():
            raise BadRequest(f"The VoxTell embedding bank {path} does not exist.")
        return path
    model_dir = Path(settings.model_dir)
    for candidate in (model_dir / "text_embeddings.npz",
                      model_dir.parent / "embeddings" / model_dir.name / "text_embeddings.npz"):
        if candidate.exists():
            return candidate
    return None


def text_encoder_available(reference: str) -> bool:
    if not reference:
        return False
    if Path(reference).is_dir():
        return (Path(reference) / "config.json").exists()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(reference, "config.json"), str)


def to_network_layout(array: np.ndarray, affine: np.ndarray):
    """(I, J, K) study array -> (S, A, R) array in RAS, as VoxTell's reader lays it out; returns (array, ornt)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(array, ornt)
    return np.ascontiguousarray(ras.transpose(2, 1, 0)), ornt


def from_network_layout(mask: np.ndarray, ornt: np.ndarray, shape) -> np.ndarray:
    """Inverse of to_network_layout for a (..., S, A, R) mask -> (..., I, J, K) on the study grid."""
    import nibabel as nib

    ras = np.swapaxes(mask, -3, -1)  # (..., S, A, R) -> (..., R, A, S)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    flat = ras.reshape(-1, *ras.shape[-3:])
    out = np.stack([nib.orientations.apply_orientation(m, back) for m in flat])
    out = out.reshape(*mask.shape[:-3], *out.shape[-3:])
    if tuple(out.shape[-3:]) != tuple(shape):
        raise RuntimeError(f"orientation round trip gave {out.shape[-3:]} for a study of {shape}")
    return out


class VoxTellBackbone:
    name = "voxtell"

    def __init__(self, settings: VoxTellSettings, registry: LabelRegistry | None = None):
        import torch

        self.settings = settings
        self._torch = torch
        self.device = select_device(settings.device, "backbone_device")
        started = time.perf_counter()
        self.network, self.patch_size = load_network(settings.model_dir)
        self.network.to(self.device)
        bank_path = find_embedding_bank(settings)
        self.bank: dict[str, np.ndarray] = load_embedding_bank(bank_path) if bank_path else {}
        self.encoded = BoundedCache("voxtell prompt embedding", max_items=4096)  # free-text prompts, 5 kB each
        self.free_text = text_encoder_available(settings.text_encoder)
        if not self.bank and not self.free_text:
            raise BadRequest(
                f"VoxTell at {settings.model_dir} has neither an embedding bank (text_embeddings.npz, or "
                f"--conf voxtell_embeddings FILE) nor its text encoder {settings.text_encoder} on this machine."
            )
        self.registry = registry or LabelRegistry()
        self._table = LabelTable({})
        self._encoder = None
        self._lock = threading.Lock()
        self.refresh()
        logger.info("VoxTell from %s: patch %s, %d bank prompts, free text %s, %s, %.1f s", settings.model_dir,
                    self.patch_size, len(self.bank), "on" if self.free_text else "off (no text encoder)",
                    self.device, time.perf_counter() - started)

    # -- vocabulary ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        ids = self.registry.ensure(sorted(self.bank))
        names = {i: n for i, n in self.registry.table().items() if i in set(ids.values())}
        self._table = LabelTable(names)

    def label_table(self) -> LabelTable:
        return self._table

    def free_text_entry(self, answer: str) -> LabelEntry:
        """A target for text the bank does not hold (free-text mode): the answer goes to VoxTell unchanged."""
        display = answer.strip().rstrip(".")
        for prefix in ("segment the ", "segment "):
            if display.lower().startswith(prefix):
                display = display[len(prefix):]
        ids = self.registry.ensure([display])
        table = LabelTable({ids[display]: display})
        entry = table.entries[0]
        return LabelEntry(entry.id, entry.name, entry.parsed, prompt=answer)

    # -- text ------------------------------------------------------------------------------------------------
    def embed(self, prompts: list[str]):
        """(1, N, 2560) float32 tensor on the device: bank lookups, the text encoder for the rest."""
        torch = self._torch
        vectors: list = [None] * len(prompts)
        missing = []
        for i, prompt in enumerate(prompts):
            vector = self.bank.get(prompt.lower())
            if vector is None:
                vector = self.encoded.get(prompt.lower())
            if vector is not None:
                vectors[i] = torch.from_numpy(np.asarray(vector, dtype=np.float32))
            else:
                missing.append(i)
        if missing:
            if not self.free_text:
                raise Refusal(
                    f"VoxTell has no embedding for '{prompts[missing[0]]}' and its text encoder "
                    f"({self.settings.text_encoder}) is not on this machine.", kind="not_in_vocabulary",
                )
            computed = self._encode([prompts[i].lower() for i in missing])
            for i, vector in zip(missing, computed, strict=True):
                vectors[i] = vector
                self.encoded.put(prompts[i].lower(), vector.numpy().astype(np.float16))
        return torch.stack(vectors).view(1, len(prompts), -1).to(self.device)

    def _encode(self, prompts: list[str]):
        torch = self._torch
        from transformers import AutoModel, AutoTokenizer

        with self._lock:
            if self._encoder is None:
                tokenizer = AutoTokenizer.from_pretrained(self.settings.text_encoder, padding_side="left")
                dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
                model = AutoModel.from_pretrained(self.settings.text_encoder, dtype=dtype).eval().to(self.device)
                self._encoder = (tokenizer, model)
        tokenizer, model = self._encoder
        wrapped = [f"Instruct: {TEXT_INSTRUCTION}\nQuery: {p}" for p in prompts]
        tokens = tokenizer(wrapped, padding=True, truncation=True, max_length=8192, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"]
        if bool((mask[:, -1] == 1).all()):  # left padding: the last token is the pooled one
            pooled = hidden[:, -1]
        else:
            pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
        return pooled.float().cpu()

    # -- prediction ------------------------------------------------------------------------------------------
    def predict(self, volume: Volume, prompts: list[str], progress: Progress | None = None,
                uncertainties: list | None = None) -> np.ndarray:
        """Masks (N, I, J, K) bool on the study grid, one per prompt, from one sliding-window pass. When a list is
        given as `uncertainties`, the sigmoid uncertainty of each prompt (see `soft_uncertainty`) is appended."""
        torch = self._torch
        from monai.inferers import SlidingWindowInferer
        from monai.transforms import NormalizeIntensity
        from monai.transforms.utils import generate_spatial_bounding_box

        embeddings = self.embed(prompts)
        data, ornt = to_network_layout(volume.array, volume.affine)
        start, end = generate_spatial_bounding_box(data[None], select_fn=lambda x: x != 0)
        if any(e <= s for s, e in zip(start, end, strict=True)):
            raise Refusal("The study is empty (all voxels are zero); VoxTell has nothing to segment.", kind="empty")
        box = tuple(slice(s, e) for s, e in zip(start, end, strict=True))
        cropped = NormalizeIntensity()(torch.from_numpy(data[box][None].astype(np.float32)))
        inferer = SlidingWindowInferer(
            roi_size=self.patch_size, sw_batch_size=self.settings.sw_batch_size, overlap=self.settings.overlap,
            mode="gaussian", padding_mode="constant", cval=0.0, progress=False,
        )
        inferer.roi_weight_map = self._weights()  # used by sliding_window_inference for full-size windows
        use_bf16 = self.device.type == "cuda" and self.settings.dtype in ("auto", "bfloat16", "bf16")

        def network(patch):
            return self.network(patch, embeddings.expand(patch.shape[0], -1, -1))

        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = inferer(cropped[None].to(self.device), network)[0]
        masks_box = (logits > 0).cpu().numpy()
        if uncertainties is not None:
            uncertainties.extend(soft_uncertainty(torch.sigmoid(channel.float())) for channel in logits)
        if progress:
            progress(f"VoxTell: {len(prompts)} prompt(s) over {tuple(cropped.shape[1:])} in "
                     f"{time.perf_counter() - started:.1f} s")
        masks = np.zeros((len(prompts), *data.shape), dtype=bool)
        masks[(slice(None), *box)] = masks_box
        return from_network_layout(masks, ornt, volume.shape)

    def _weights(self):
        """nnU-Net's Gaussian patch weighting (sigma = patch / 8, centre at patch // 2), as VoxTell's predictor uses."""
        if getattr(self, "_weight_map", None) is None:
            from nnunetv2.inference.sliding_window_prediction import compute_gaussian

            self._weight_map = compute_gaussian(tuple(self.patch_size), sigma_scale=1.0 / 8, value_scaling_factor=10,
                                                dtype=self._torch.float32, device=self.device)
        return self._weight_map

    def segment(self, volume: Volume, entry: LabelEntry, evidence: ImageEvidence,
                progress: Progress | None = None) -> Segmentation:
        started = time.perf_counter()
        prompt = entry.prompt or entry.name
        uncertainty: list = []
        mask = self.predict(volume, [prompt], progress, uncertainty)[0]
        if not mask.any():
            raise Refusal(f"VoxTell found no '{prompt}' in this study.", kind="empty_mask")
        return Segmentation(mask=mask, details={"prompt": prompt, "patch_size": list(self.patch_size),
                                                "voxels": int(mask.sum()), "uncertainty": uncertainty[0],
                                                "seconds": round(time.perf_counter() - started, 3)})
