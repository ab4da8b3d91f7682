"""Label-indexed MONAI networks: any MONAI bundle folder (network definition + weights + label dictionary), or a
MONAI network definition + weights file + label table given in the settings (turned into the same configuration).

The bundle's own `network_def`, `preprocessing` and `inferer` (configs/inference.json or .yaml) run as the bundle
defines them; the label dictionary is `network_data_format.outputs.pred.channel_def` of configs/metadata.json.
The resolved target selects one output channel: for softmax bundles the voxels where that channel holds the
maximum logit (`torch.max` over channels, not argmax, which is ~50x slower on CPU), for sigmoid bundles the
voxels where its logit > 0. VISTA3D-style networks (`class_prompt` in metadata, or a `VISTA3D` network) get the
label id as class prompt and return that target alone. Only the selected mask is inverted (MONAI `Invertd`
through the bundle's preprocessing) onto the study's own grid.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seer.devices import select_device
from seer.errors import BadRequest, Refusal
from seer.imaging.evidence import ImageEvidence
from seer.imaging.volume import Volume
from seer.reasoning.targets import LabelEntry, LabelTable
from seer.segmentation.backbones import Progress, Segmentation, soft_uncertainty

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleSettings:
    bundle_dir: str  # a bundle folder, or a weights file (.pt) when `network` is given
    device: str = "auto"
    network: str = ""  # JSON network_def (MONAI config syntax), e.g. {"_target_": "SegResNet", ...}
    labels: str = ""  # labels.json ({"1": "liver", ...}) for `network`
    roi_size: str = "96,96,96"  # sliding-window patch for `network`
    preprocessing: str = ""  # JSON list of dictionary transforms after loading; default: RAS + z-score
    sw_batch_size: int = 0  # 0: as the bundle's inferer says
    overlap: float = -1.0  # < 0: as the bundle's inferer says
    dtype: str = "auto"  # auto: float32 (bundles are trained in AMP; autocast on GPU when 'float16'/'bfloat16')


def _config_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".json", ".yaml", ".yml"):
        path = folder / "configs" / f"{stem}{suffix}"
        if path.exists():
            return path
    return None


def _weights_file(folder: Path) -> Path | None:
    for name in ("model.pt", "model.pth", "model_final.pt"):
        if (folder / "models" / name).exists():
            return folder / "models" / name
    return None


def _config_from_settings(settings: BundleSettings):
    """(inference config, metadata, weights) for a network given in the settings instead of a bundle folder."""
    weights = Path(settings.bundle_dir)
    if not weights.is_file():
        raise BadRequest(f"With --conf bundle_network, backbone_model must be the weights file; '{weights}' is not.")
    try:
        network = json.loads(settings.network)
        extra = json.loads(settings.preprocessing) if settings.preprocessing else [
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}]
        labels = json.loads(Path(settings.labels).read_text()) if settings.labels else None
        roi = [int(v) for v in settings.roi_size.split(",")]
    except (ValueError, OSError) as exc:
        raise BadRequest(f"The network settings are not usable ({exc}); bundle_network and bundle_preprocessing "
                         "are JSON, bundle_labels a labels.json file, bundle_roi like 96,96,96.") from None
    if not labels:
        raise BadRequest("A network given with --conf bundle_network needs --conf bundle_labels labels.json.")
    inference = {
        "network_def": network,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            *extra,
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": 1, "overlap": 0.5,
                    "mode": "gaussian"},
    }
    metadata = {"network_data_format": {"outputs": {"pred": {"channel_def": labels}}}}
    return inference, metadata, weights


class BundleBackbone:
    name = "bundle"
    free_text = False

    def __init__(self, settings: BundleSettings):
        import torch
        from monai.bundle import ConfigParser

        self.settings = settings
        self._torch = torch
        folder = Path(settings.bundle_dir)
        if settings.network:
            inference, metadata, weights = _config_from_settings(settings)
        else:
            inference = _config_file(folder, "inference")
            metadata = _config_file(folder, "metadata")
            weights = _weights_file(folder)
        if inference is None or metadata is None or weights is None:
            raise BadRequest(
                f"'{folder}' is not a MONAI bundle: it needs configs/inference.json (or .yaml), "
                "configs/metadata.json and models/model.pt (or give a network with --conf bundle_network)."
            )
        self.device = select_device(settings.device, "backbone_device")
        started = time.perf_counter()
        parser = ConfigParser()
        parser.read_config(inference if isinstance(inference, dict) else str(inference))
        parser.read_meta(metadata if isinstance(metadata, dict) else str(metadata))
        parser["bundle_root"] = str(folder)
        parser["device"] = str(self.device)
        self.parser = parser
        if isinstance(metadata, dict):
            meta = metadata
        else:
            meta = json.loads(metadata.read_text()) if metadata.suffix == ".json" else parser.get("_meta_", {})
        outputs = meta.get("network_data_format", {}).get("outputs", {})
        pred = outputs.get("pred") or (next(iter(outputs.values())) if outputs else {})
        channel_def = pred.get("channel_def") or {}
        if not channel_def:
            raise BadRequest(f"The bundle {folder} has no label dictionary (network_data_format.outputs.pred.channel_def).")
        self.labels = {int(k): str(v) for k, v in channel_def.items()}
        self.class_prompt = bool(meta.get("class_prompt", False))
        self.sigmoid = bool(meta.get("sigmoid", False)) or self.class_prompt
        try:
            self.network = parser.get_parsed_content("network_def", instantiate=True)
            state = torch.load(str(weights), map_location="cpu", weights_only=False)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]
            self.network.load_state_dict(state)
            self.preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
            self.inferer = parser.get_parsed_content("inferer", instantiate=True)
        except Exception as exc:  # noqa: BLE001 - a broken bundle is a configuration error with its cause
            raise BadRequest(f"The bundle {folder} could not be loaded: {str(exc).splitlines()[0][:200]}") from None
        if type(self.network).__name__ == "VISTA3D":
            self.class_prompt = self.sigmoid = True
        if settings.sw_batch_size > 0 and hasattr(self.inferer, "sw_batch_size"):
            self.inferer.sw_batch_size = settings.sw_batch_size
        if settings.overlap >= 0 and hasattr(self.inferer, "overlap"):
            self.inferer.overlap = settings.overlap
        self.network.to(self.device).eval()
        background = {k for k, v in self.labels.items() if v.lower() in ("background", "bg", "_background_")}
        self._table = LabelTable({k: v for k, v in self.labels.items() if k not in background})
        self._lock = threading.Lock()
        logger.info("bundle %s: %d targets, %s outputs, %s, %.1f s", folder.name, len(self._table),
                    "class-prompted sigmoid" if self.class_prompt else ("sigmoid" if self.sigmoid else "softmax"),
                    self.device, time.perf_counter() - started)

    def label_table(self) -> LabelTable:
        return self._table

    def refresh(self) -> None:
        """The label table is the bundle's own: nothing to refresh."""

    def segment(self, volume: Volume, entry: LabelEntry, evidence: ImageEvidence,
                progress: Progress | None = None) -> Segmentation:
        torch = self._torch
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        started = time.perf_counter()
        data = self.preprocessing({"image": volume.path})
        image = data["image"]
        if not isinstance(image, torch.Tensor):
            raise RuntimeError("the bundle's preprocessing did not produce a tensor")
        use_amp = self.device.type == "cuda" and self.settings.dtype in ("float16", "bfloat16")
        amp_dtype = torch.bfloat16 if self.settings.dtype == "bfloat16" else torch.float16
        channel = entry.id
        with self._lock, torch.inference_mode(), torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
            batch = image[None].to(self.device)
            if self.class_prompt:
                prompt = torch.tensor([[channel]], device=self.device)
                logits = self.inferer(batch, lambda x: self.network(x, class_vector=prompt))
                selected = logits[0, 0] > 0
                uncertainty = soft_uncertainty(torch.sigmoid(logits[0, 0].float()))
            else:
                logits = self.inferer(batch, self.network)[0]
                if channel >= logits.shape[0]:
                    raise Refusal(f"The bundle's network has {logits.shape[0]} output channels; label {channel} "
                                  f"('{entry.name}') is not among them.", kind="not_in_vocabulary")
                # softmax bundles: the voxels whose maximum channel is the target (argmax without the argmax)
                selected = logits[channel] > 0 if self.sigmoid else logits[channel] >= logits.max(dim=0).values
                probability = (torch.sigmoid(logits[channel].float()) if self.sigmoid
                               else torch.softmax(logits.float(), dim=0)[channel])
                uncertainty = soft_uncertainty(probability)
        network_s = time.perf_counter() - started
        mask = MetaTensor(selected[None].float().cpu(), meta=image.meta, applied_operations=image.applied_operations)
        data["pred"] = mask
        inverted = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=True,
                           to_tensor=True)(data)["pred"]
        result = np.asarray(inverted[0].cpu().numpy() > 0.5)
        if tuple(result.shape) != tuple(volume.shape):
            raise RuntimeError(f"inverted mask {result.shape} does not match the study {volume.shape}")
        if not result.any():
            raise Refusal(f"The bundle's network found no '{entry.name}' in this study.", kind="empty_mask")
        if progress:
            progress(f"bundle: '{entry.name}' in {network_s:.1f} s")
        return Segmentation(mask=result, details={"channel": channel, "network_s": round(network_s, 3),
                                                  "voxels": int(result.sum()), "uncertainty": uncertainty,
                                                  "seconds": round(time.perf_counter() - started, 3)})
