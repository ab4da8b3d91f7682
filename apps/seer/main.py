"""SEER Label as a MONAI Label app: adapts MONAI Label's requests and datastore to the `seer` core.

Start it with `python main.py serve` from the repository root (or `monailabel start_server --app apps/seer ...`).
Conf keys (`--conf KEY VALUE`) are parsed once into `seer.settings.SeerSettings`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("seer") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO / "lib"))

from fastapi import HTTPException  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import DefaultLabelTag  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

import seer  # noqa: E402
from seer.atlases import AtlasSource, LabelRegistry  # noqa: E402
from seer.errors import SeerError  # noqa: E402
from seer.pipeline import build_pipeline, user_cache_dir  # noqa: E402
from seer.settings import SeerSettings  # noqa: E402
from seer.volume import VolumeCache  # noqa: E402

from lib.infers.seer import SEERInferTask  # noqa: E402

logger = logging.getLogger(__name__)


class SEERApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict):
        try:
            self.seer_settings = SeerSettings.from_conf(conf)
        except SeerError as exc:
            # A bad --conf value must stop the server with the sentence, not a stack trace of the whole app.
            logger.error("SEER Label cannot start: %s", exc.message)
            raise SystemExit(2) from None
        if self.seer_settings.unknown:
            logger.warning("ignoring unknown conf keys: %s", ", ".join(self.seer_settings.unknown))
        self.volumes = VolumeCache(capacity=12)  # studies and atlases share it
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SEER Label",
            description="Free-text 3D segmentation: SEER reasoning over the image, then a segmentation backbone.",
            version=seer.__version__,
        )

    # -- MONAI Label hooks -------------------------------------------------------------------------------------
    def init_infers(self):
        datastore = self.datastore()
        root = getattr(datastore, "_datastore_path", None)
        self.state_dir = Path(root) / ".seer" if root else user_cache_dir() / "datastores" / _slug(self.studies)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = LabelRegistry(self.state_dir / "label_table.json")
        try:
            self.pipeline = build_pipeline(
                self.seer_settings, self.state_dir, extra_atlases=self._datastore_atlases, registry=self.registry,
                volumes=self.volumes,
            )
        except SeerError as exc:  # a model folder or endpoint setting that cannot work: say so and stop
            logger.error("SEER Label cannot start: %s", exc.message)
            raise SystemExit(2) from None
        self._atlas_signature = self._labels_signature()
        reasoner_name = self.pipeline.reasoner.name
        logger.info("SEER Label: reasoner %s; backbone %s with %d targets; state in %s", reasoner_name,
                    self.pipeline.backbone.name, len(self.pipeline.backbone.label_table()), self.state_dir)
        return {
            "seer": SEERInferTask(
                self.pipeline,
                reasoner_name,
                results_dir=self.state_dir / "results",
                proposals_dir=self.state_dir / "proposals",
                volumes=self.volumes,
            )
        }

    def init_strategies(self):
        return {"random": Random(), "first": First()}

    def infer(self, request, datastore=None):
        """Stock inference with SEER's errors mapped onto HTTP 4xx (never a 500 for bad input)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"No inference task '{model}'; this server offers: {', '.join(self._infers)}.")
        datastore = datastore or self.datastore()
        image = request.get("image")
        if isinstance(image, str):
            if not image:
                raise HTTPException(422, "No image given: pass ?image=ID (GET /datastore/?output=all lists studies).")
            if not os.path.exists(image) and not datastore.get_image_uri(image):
                count = len(datastore.list_images())
                raise HTTPException(
                    404, f"No study with id '{image}' in the datastore ({count} studies; GET /datastore/?output=all "
                    "lists them)."
                )
            request = {**request, "image_id": image if not os.path.exists(image) else os.path.basename(image)}
        self._refresh_atlases_if_labels_changed()
        try:
            return super().infer(request, datastore)
        except SeerError as exc:
            raise HTTPException(exc.status, exc.message) from None

    def on_save_label(self, image_id, label_id):
        """A saved final label makes its study an atlas: refresh the backbone's atlas list and label table."""
        super().on_save_label(image_id, label_id)
        try:
            self.pipeline.backbone.refresh()
            self._atlas_signature = self._labels_signature()
        except Exception:  # noqa: BLE001 - saving must succeed even if an atlas is unreadable
            logger.exception("atlas refresh after saving %s failed", image_id)
        return {}

    # -- datastore atlases -------------------------------------------------------------------------------------
    def _labels_signature(self) -> tuple:
        datastore = self.datastore()
        signature = []
        for image_id in sorted(datastore.get_labeled_images(DefaultLabelTag.FINAL)):
            path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
            try:
                signature.append((image_id, os.stat(path).st_mtime_ns))
            except OSError:
                continue
        return tuple(signature)

    def _refresh_atlases_if_labels_changed(self) -> None:
        """Labels copied into labels/final by hand (no PUT) become atlases on the next request too."""
        if not self.seer_settings.datastore_atlases:
            return
        signature = self._labels_signature()
        if signature != self._atlas_signature:
            self.pipeline.backbone.refresh()
            self._atlas_signature = signature

    def _datastore_atlases(self) -> list[AtlasSource]:
        """Every datastore study with a final label, with the label's names (see `_label_names`)."""
        if not self.seer_settings.datastore_atlases:
            return []
        datastore = self.datastore()
        sources = []
        for image_id in datastore.get_labeled_images(DefaultLabelTag.FINAL):
            image_path = datastore.get_image_uri(image_id)
            label_path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
            if not (image_path and label_path and os.path.isfile(image_path) and os.path.isfile(label_path)):
                continue
            names = self._label_names(datastore.get_label_info(image_id, DefaultLabelTag.FINAL))
            if names:
                sources.append(AtlasSource(f"datastore:{image_id}", image_path, label_path, names, "datastore"))
        return sources

    def _label_names(self, info: dict) -> dict[int, str]:
        """Label value -> name, from the saved label's params: `label_names` ({name: value}, as SEER returns it)
        or `label_info` ([{"name", "idx"}], as the Slicer plugin sends it); otherwise the values are taken to be
        ids of this app's label table (a SEER proposal saved as is)."""
        info = info or {}
        params = info.get("params") if isinstance(info.get("params"), dict) else {}
        label_names = info.get("label_names") or params.get("label_names")
        if isinstance(label_names, dict):
            return {int(v): str(k) for k, v in label_names.items() if str(v).lstrip("-").isdigit() and int(v) != 0}
        label_info = info.get("label_info") or params.get("label_info")
        if isinstance(label_info, list):
            out = {}
            for item in label_info:
                if isinstance(item, dict) and "name" in item and str(item.get("idx", "")).isdigit():
                    out[int(item["idx"])] = str(item["name"])
            return out
        return self.registry.table()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[-80:]

