"""The `seer` infer task: MONAI Label request <-> seer.pipeline.

The published `config` becomes the option panel of Slicer and OHIF: an editable `prompt` text field and the
reasoner / backbone choices. Results are written to the app's own folder (never /tmp, where MONAILabelClient
saves the reply under the same name) and the proposal is kept for rewards; every request, refused or not, is
appended to the trace log.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from seer.errors import BadRequest, Refusal, SeerError
from seer.imaging.volume import ResultFormat, VolumeCache, write_mask
from seer.pipeline import SeerPipeline
from seer.reasoning.reasoners import CHOICES as REASONER_CHOICES

logger = logging.getLogger(__name__)


class SEERInferTask(InferTask):
    def __init__(
        self,
        pipeline: SeerPipeline,
        reasoner_name: str,
        results_dir: Path,
        proposals_dir: Path,
        volumes: VolumeCache,
    ):
        self.pipeline = pipeline
        self.reasoner_name = reasoner_name
        self.backbone_name = pipeline.backbone.name
        self.results_dir = Path(results_dir)
        self.proposals_dir = Path(proposals_dir)
        self.volumes = volumes
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.proposals_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=pipeline.backbone.label_table().names(),
            dimension=3,
            description=(
                "SEER: type a free-text request (e.g. 'rt hip bone pls', 'left hippocampus'); the reasoner turns it "
                "into a target of the backbone's label table and the backbone segments it."
            ),
            config={
                "prompt": "",
                "reasoner": [reasoner_name] + [c for c in REASONER_CHOICES if c not in (reasoner_name, "auto")],
                "backbone": [self.backbone_name],
            },
        )

    def info(self):
        self.labels = self.pipeline.backbone.label_table().names()
        return super().info()

    def is_valid(self) -> bool:
        return True

    def _check_choice(self, request: dict, key: str, active: str, accepted: set[str]) -> None:
        value = request.get(key)
        if isinstance(value, list):  # the client echoed the option list back unchanged
            value = value[0] if value else None
        if value in (None, "", active) or value in accepted:
            return
        raise BadRequest(
            f"This server runs {key} '{active}'; '{value}' is not loaded here. Start the server with "
            f"--conf {key} {value} to use it."
        )

    def __call__(self, request: dict):
        start = time.perf_counter()
        study = str(request.get("image_id") or request.get("image") or "")
        self._check_choice(request, "reasoner", self.reasoner_name, {"auto"})
        self._check_choice(request, "backbone", self.backbone_name, set())
        prompt = request.get("prompt")
        result_format = ResultFormat.from_params(request)  # a format we cannot write: 422 before any work
        reasoning = None
        try:
            volume = self.volumes.get(str(request.get("image") or ""), name=study)
            outcome = self.pipeline.run(prompt, volume, progress=lambda message: logger.info("[%s] %s", study, message))
            result_format.check_value(outcome.entry.id, outcome.entry.name)
        except Refusal as refusal:
            reasoning = refusal.details.get("reasoning")
            self.pipeline.record(reasoning, study, raw=prompt, refusal=refusal)
            raise
        except SeerError as error:
            self.pipeline.record(None, study, raw=prompt, refusal=error)
            raise
        t_write = time.perf_counter()
        name = f"{uuid.uuid4().hex}.nii.gz"
        proposal = self.proposals_dir / name
        write_mask(outcome.mask, volume, proposal, value=outcome.entry.id)
        if result_format.is_default:
            result = self.results_dir / name
            try:
                os.link(proposal, result)  # the endpoint deletes the result after replying; the proposal stays
            except OSError:
                shutil.copyfile(proposal, result)
        else:  # the client's format (OHIF asks for raw uint8 NRRD); the proposal stays NIfTI for rewards
            result = self.results_dir / (name.removesuffix(".nii.gz") + result_format.extension)
            result_format.write(outcome.mask, volume, result, outcome.entry.id)
        write_s = time.perf_counter() - t_write
        latencies = dict(outcome.latencies, write_s=round(write_s, 4), total_s=round(time.perf_counter() - start, 4))
        trace = outcome.reasoning.trace
        row = self.pipeline.record(
            outcome.reasoning,
            study,
            proposal=proposal,
            voxels=int(outcome.mask.sum()),
            details=outcome.details,
            latencies=latencies,
        )
        entry = outcome.entry
        params = {
            "label_names": {entry.name: entry.id},
            "target": {
                "id": entry.id,
                "name": entry.name,
                "description": entry.describe(),
                "method": outcome.reasoning.resolution.method,
            },
            "trace": {
                "evidence": trace.evidence,
                "rationale": trace.rationale,
                "answer": trace.answer,
                "format_valid": trace.format_valid,
                "answer_source": trace.answer_source,
                "skill_ids": trace.skill_ids,
                "reasoner": trace.reasoner,
                "style": outcome.reasoning.style,
            },
            "trace_id": row["id"] if row else None,
            "voxels": int(outcome.mask.sum()),
            "backbone": {"name": self.backbone_name, **outcome.details},
            "latencies": {
                **latencies,
                # MONAI Label's own keys, read by the Slicer and OHIF plugins' logs
                "pre": latencies["views_s"] + latencies["reasoning_s"],
                "infer": latencies["backbone_s"],
                "write": latencies["write_s"],
                "total": latencies["total_s"],
            },
        }
        logger.info(
            "[%s] '%s' -> %s (id %d), %d voxels, %.2f s", study, str(prompt)[:80], entry.name, entry.id,
            params["voxels"], latencies["total_s"],
        )
        return str(result), params
