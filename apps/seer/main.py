"""SEER Label as a MONAI Label app: adapts MONAI Label's requests and datastore to the `seer` core.

Start it with `python main.py serve` from the repository root (or `monailabel start_server --app apps/seer ...`).
Conf keys (`--conf KEY VALUE`) are parsed once into `seer.settings.SeerSettings`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("seer") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO / "lib"))
# dcmqi's itkimage2segimage comes from its PyPI wheel into this environment's bin folder; with it on PATH MONAI
# Label finds it and skips downloading dcmqi at start-up (a DICOMweb server starts offline).
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join(p for p in (_BIN, os.environ.get("PATH", "")) if p)

from dicomweb_client.session_utils import create_session_from_user_pass  # noqa: E402
from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings as monailabel_settings  # noqa: E402
from monailabel.datastore.dicom import DICOMwebClientX  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import DefaultLabelTag  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

import seer  # noqa: E402
from seer.active_learning.scoring import ScoringSettings, StudyScorer  # noqa: E402
from seer.active_learning.strategy import ActiveLearning, recent_traces  # noqa: E402
from seer.active_learning.study_state import StudyState, split_holder  # noqa: E402
from seer.devices import share_cpu_threads  # noqa: E402
from seer.errors import SeerError, StateUnavailable  # noqa: E402
from seer.files import datastore_state_dir  # noqa: E402
from seer.housekeeping import Housekeeper  # noqa: E402
from seer.imaging.volume import VolumeCache  # noqa: E402
from seer.loop.annotation_loop import AnnotationLoop  # noqa: E402
from seer.loop.rewards import FinalLabel, Rewarder, TraceLedger, label_names_from_info  # noqa: E402
from seer.loop.saved_labels import name_label_values  # noqa: E402
from seer.memory import limit_heap_growth  # noqa: E402
from seer.pacs.dicomweb_paths import is_uid  # noqa: E402
from seer.pipeline import build_pipeline, label_registry, open_state_db  # noqa: E402
from seer.review.desk import DATASTORE_READER, ReviewDesk, provenance  # noqa: E402
from seer.review.label_reads import DECISIONS, LabelReads  # noqa: E402
from seer.segmentation.atlases import AtlasSource  # noqa: E402
from seer.settings import SeerSettings  # noqa: E402

from lib.activelearning.seer import SeerStrategy  # noqa: E402
from lib.auth import install as install_token_check  # noqa: E402
from lib.datastore import SeerDICOMwebDatastore, SeerLocalDatastore  # noqa: E402
from lib.infers.seer import SEERInferTask  # noqa: E402
from lib.routes import install as install_routes  # noqa: E402
from lib.scoring.seer import SeerScoring  # noqa: E402

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
        if self.seer_settings.auth_realm and not monailabel_settings.MONAI_LABEL_AUTH_ENABLE:
            # MONAI Label reads its auth settings when its server module is imported, before any app exists.
            logger.error("SEER Label cannot start: --conf auth_realm needs auth switched on before the server "
                         "starts; start it with `python main.py serve --conf auth_realm URL` (which does that) or "
                         "set MONAI_LABEL_AUTH_ENABLE=true and MONAI_LABEL_AUTH_REALM_URI=URL.")
            raise SystemExit(2)
        if monailabel_settings.MONAI_LABEL_AUTH_ENABLE:
            install_token_check()
        limit_heap_growth()  # freed volumes go back to the system (seer/memory.py)
        threads = share_cpu_threads(self.seer_settings.infer_concurrency)  # side-by-side inferences split the cores
        logger.info("%d CPU thread(s) per inference (infer_concurrency %d)", threads,
                    self.seer_settings.infer_concurrency)
        self.volumes = VolumeCache(self.seer_settings.volume_cache_mb)  # studies and atlases share it
        self._trace_cache: dict = {}
        self._trace_lock = threading.Lock()
        self._labels_lock = threading.Lock()  # inferences and saves run on several threads
        self.not_atlases: dict[str, str] = {}  # study -> why its final label is not an atlas (logged, in /info)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SEER Label",
            description="Free-text 3D segmentation: SEER reasoning over the image, then a segmentation backbone.",
            version=seer.__version__,
        )
        # Stock auto-scoring starts every scoring method in a subprocess holding a second copy of the app after
        # each next-sample; `seer` scores in this process's background worker instead (ActiveLearning).
        self._auto_update_scoring = False

    # -- MONAI Label hooks -------------------------------------------------------------------------------------
    def init_datastore(self):
        """A local studies folder: SeerLocalDatastore (MONAI Label's, with a reload that is safe under saves); a
        DICOMweb URL: init_remote_datastore."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return SeerLocalDatastore(self.studies, extensions=monailabel_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                  auto_reload=monailabel_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                  read_only=monailabel_settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_remote_datastore(self):
        """A DICOMweb PACS through SEER's adaptation of MONAI Label's datastore (lib/datastore.py); XNAT and DSA
        stay stock."""
        if monailabel_settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa") or "googleapis.com" in self.studies:
            return super().init_remote_datastore()  # Google Healthcare needs the stock client's credentials
        ms = monailabel_settings
        session = None
        if ms.MONAI_LABEL_DICOMWEB_USERNAME and ms.MONAI_LABEL_DICOMWEB_PASSWORD:
            session = create_session_from_user_pass(ms.MONAI_LABEL_DICOMWEB_USERNAME, ms.MONAI_LABEL_DICOMWEB_PASSWORD)
        client = DICOMwebClientX(url=self.studies, session=session, qido_url_prefix=ms.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=ms.MONAI_LABEL_WADO_PREFIX, stow_url_prefix=ms.MONAI_LABEL_STOW_PREFIX)
        attempts = self.seer_settings.dicomweb_retries  # the client's default is 5 attempts with exponential waits
        client.set_http_retry_params(retry=attempts > 1, max_attempts=attempts)
        self._download_dcmqi_tools()  # finds the wheel's itkimage2segimage on PATH: no download
        settings = self.seer_settings
        cache = (ms.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
        return SeerDICOMwebDatastore(
            client, ms.MONAI_LABEL_DICOMWEB_SEARCH_FILTER, cache, ms.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
            ms.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
            modalities=settings.modalities(), cache_s=settings.dicomweb_cache_s, store_seg=settings.store_seg,
            seg_after_review=settings.review,
            names_for_label=self._names_for_label, traces_for_label=self._traces_for_label,
        )

    def _traces_for_label(self, image_id: str, names: dict[int, str]) -> list[dict]:
        """The newest SEER trace on the study for each target the label holds (id, request, target name, reasoner,
        backbone, skill round, time, model weights, atlases used), for the SEG and the label's provenance: the
        study's history is read from the newest trace back until every target has one (archives included)."""
        wanted = set(names.values())
        newest: dict[str, dict] = {}
        log = self.pipeline.trace_log
        try:
            for row in log.history(image_id) if log is not None and wanted else ():
                target = (row.get("target") or {}).get("name")
                if target in wanted and target not in newest:
                    newest[target] = row
                    if len(newest) == len(wanted):
                        break
        except StateUnavailable as exc:  # the SEG goes to the PACS without the requests that proposed it
            logger.warning("SEG of %s: its SEER requests are left out: %s", image_id, exc.message)
        return [{"id": r.get("id"), "request": r.get("request"), "target": t, "reasoner": r.get("reasoner"),
                 "backbone": r.get("backbone"), "skill_round": r.get("skill_round"), "ts": r.get("ts"),
                 "models": r.get("models") or {}, "atlases": (r.get("details") or {}).get("atlases")}
                for t, r in sorted(newest.items())]

    def _names_for_label(self, info: dict, values: list[int]) -> dict[int, str]:
        """Segment names of a label saved as DICOM SEG, by the one rule of seer.loop.saved_labels: the client's
        label_names / label_info first, this server's label table for the values the client left unnamed."""
        table = self.pipeline.backbone.label_table()
        return name_label_values(values, label_names_from_info(info), table, require_all=False).names

    def init_infers(self):
        datastore = self.datastore()
        root = getattr(datastore, "_datastore_path", None)
        self.state_dir = datastore_state_dir(self.studies, root)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.reads = LabelReads.for_datastore(self.seer_settings.state_db, self.state_dir)
            self.desk = ReviewDesk(
                self.reads, review=self.seer_settings.review, review_self=self.seer_settings.review_self,
                min_dice=self.seer_settings.agreement_min_dice, write_label=self._write_final_label,
                teach=self._teach, withdraw=self._withdraw,
                keep_reads=self.seer_settings.review or self.seer_settings.reads_per_study > 1)
            self.state_db = open_state_db(self.seer_settings, self.state_dir)  # imports this folder's files once
            self.registry = label_registry("label_table", self.state_dir, self.state_db)
            self.pipeline = build_pipeline(
                self.seer_settings, self.state_dir, extra_atlases=self._datastore_atlases, registry=self.registry,
                volumes=self.volumes, state_db=self.state_db,
            )
        except SeerError as exc:  # a model folder or endpoint setting that cannot work: say so and stop
            logger.error("SEER Label cannot start: %s", exc.message)
            raise SystemExit(2) from None
        self._labels_seen = self._labels_signature()
        self.pipeline.warm()
        try:
            self.study_state = StudyState.for_datastore(self.seer_settings.state_db, self.state_dir,
                                                        self.seer_settings.reads_per_study)
        except SeerError as exc:
            logger.error("SEER Label cannot start: %s", exc.message)
            raise SystemExit(2) from None
        self.active_learning = self._active_learning()
        self.annotation = self._annotation_loop() if self.seer_settings.rewards else None
        annotation = self.annotation
        self.housekeeper = Housekeeper(
            self.state_dir, self.seer_settings.disk_limits(),
            rewarded=lambda: annotation.ledger.rewarded_proposals() if annotation else set(),
            stored=self._prune_stored_proposals if self.state_db is not None else None,
        ).start()
        reasoner_name = self.pipeline.reasoner.name
        round_number, bank = self.pipeline.skill_rounds.active()
        logger.info("SEER Label: reasoner %s; backbone %s with %d targets; skill round %d (%d skills); state in %s",
                    reasoner_name, self.pipeline.backbone.name, len(self.pipeline.backbone.label_table()),
                    round_number, len(bank), self.state_dir)
        return {
            "seer": SEERInferTask(
                self.pipeline,
                reasoner_name,
                results_dir=self.state_dir / "results",
                proposals_dir=self.state_dir / "proposals",
                volumes=self.volumes,
            )
        }

    def _prune_stored_proposals(self, limits) -> int:
        """The proposal masks in the shared state database, pruned as the proposal files are: rewarded ones after
        `proposals_days`, the oldest beyond `proposals_mb`."""
        waiting = self.annotation.ledger.waiting() if self.annotation else set()
        return self.pipeline.trace_log.prune_proposals(waiting, limits.proposals_days * 86400,
                                                       limits.proposals_mb * 2**20)

    def _annotation_loop(self) -> AnnotationLoop:
        """Rewards from saved labels and skill rounds, on a background worker started now (it first finishes
        what a crash or restart left pending)."""
        pipeline = self.pipeline
        rounds = pipeline.skill_rounds

        def on_round(number, bank):
            pipeline.warm(bank)  # the new bank's retrieval index is built here, not by the next request
            pipeline.skill_bank = bank  # the reasoner's trace cache empties with the bank version
            self.active_learning.trigger(f"skill round {number} closed")

        ledger = TraceLedger(pipeline.trace_log)

        def after_job():
            pipeline.warm()  # a saved label may have changed the vocabulary the index is built for
            self.study_state.set_reward_counts(ledger.reward_counts())

        loop = AnnotationLoop(
            ledger,
            rounds,
            Rewarder(pipeline.backbone, pipeline.context, self.volumes.get, rounds.skill_tag, self.seer_settings.dataset,
                     proposal_file=pipeline.trace_log.proposal_file),
            final_label=self._final_label,
            labelled=self._teaching_studies,
            on_round=on_round,
            after_job=after_job,
            queue_size=self.seer_settings.reward_queue,
            scan_every_s=self.seer_settings.scan_s,
            teaches=self.teaches if self.seer_settings.review else None,
        )
        loop.start()
        return loop

    def _active_learning(self) -> ActiveLearning:
        """Strategy and scoring method `seer` over this datastore's state database (started in on_init_complete)."""
        settings = self.seer_settings
        scorer = StudyScorer(self.pipeline, ScoringSettings.from_settings(settings))

        def load_volume(study: str):
            return self.volumes.get(self.datastore().get_image_uri(study), study)

        return ActiveLearning(
            self.study_state, scorer, list_studies=self._list_studies, load_volume=load_volume,
            trace_rows=self.recent_traces, campaign=settings.campaign_requests(), lease_s=settings.lease_s,
            scan_every_s=settings.scan_s, one_per_client=settings.lease_one_per_client,
        )

    def trace_rows(self, study: str, limit: int) -> tuple[list[dict], int]:
        """The newest `limit` traces on a study, newest first, and how many it has, archives included
        (GET /seer/trace)."""
        log = self.pipeline.trace_log
        if log is None:
            return [], 0
        return list(log.history(study, limit)), log.count(study)

    def recent_traces(self) -> list[dict]:
        """The newest traces of the log for active learning (campaign fallback and phrasings; see
        seer.active_learning.strategy.recent_traces), re-read only when the log changed."""
        log = self.pipeline.trace_log
        if log is None:
            return []
        key = log.stamp()
        with self._trace_lock:
            if self._trace_cache.get("key") != key:
                self._trace_cache.update(key=key, rows=recent_traces(log))
            return self._trace_cache["rows"]

    def _list_studies(self) -> tuple[dict[str, str], list[str]]:
        """Every study with its image stamp (size and mtime of a local file; the id for remote studies), and the
        studies with a final label."""
        datastore = self.datastore()
        local = not isinstance(datastore, SeerDICOMwebDatastore)  # a PACS series never changes under its UID
        studies: dict[str, str] = {}
        for image_id in datastore.list_images():
            stamp = image_id
            if local:
                try:
                    stat = os.stat(datastore.get_image_uri(image_id))
                    stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
                except OSError:
                    continue
            studies[image_id] = stamp
        return studies, list(datastore.get_labeled_images(DefaultLabelTag.FINAL))

    def init_scoring_methods(self):
        return {"seer": SeerScoring(self.active_learning)}

    def on_init_complete(self):
        super().on_init_complete()
        install_routes(self)
        self.active_learning.start()

    def _final_label(self, image_id: str) -> FinalLabel | None:
        datastore = self.datastore()
        path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
        image = datastore.get_image_uri(image_id)
        if not (path and image and os.path.isfile(path) and os.path.isfile(image)):
            return None
        info = datastore.get_label_info(image_id, DefaultLabelTag.FINAL)
        return FinalLabel.of(image_id, image, path, label_names_from_info(info))

    def _sync_skill_bank(self) -> None:
        """Without the annotation loop (which does this on its worker), pick up a round that another process on
        this datastore closed (a stat call when there is none)."""
        rounds = self.pipeline.skill_rounds
        if rounds is not None and self.annotation is None:
            _, bank = rounds.active()
            if bank is not self.pipeline.skill_bank:
                self.pipeline.skill_bank = bank

    def info(self):
        meta = super().info()
        if getattr(self, "pipeline", None) is not None:
            number, bank = self.pipeline.skill_rounds.active()
            loop = getattr(self, "annotation", None)
            state_db, rewards, active_learning = self._shared_state_status(loop)
            meta["seer"] = {
                "reasoner": self.pipeline.reasoner.name,
                "backbone": self.pipeline.backbone.name,
                "round": number,
                "skills": len(bank),
                "rewards": rewards,
                "rewards_withdrawn": len(loop.ledger.withdrawn) if loop else 0,
                "round_size": self.seer_settings.skill_round,
                "rewards_enabled": loop is not None,
                "rewards_queued": loop.queued() if loop else 0,
                "active_learning": active_learning,
                "state_db": state_db,
                "labels_not_atlases": dict(self.not_atlases),
                "review": self._review_status(),
                "label_aliases": self.pipeline.backbone.label_table().aliases_by_name(),
                "housekeeping": self.housekeeper.last,
                "caches": {"volumes": self.volumes.stats(), **self.pipeline.cache_stats()},
            }
            datastore = self.datastore()
            if isinstance(datastore, SeerDICOMwebDatastore):
                meta["seer"]["pacs"] = {"url": self.studies, "store_seg": datastore.store_seg,
                                        "unreadable_labels": datastore.unreadable_labels()}
        return meta

    def _shared_state_status(self, loop) -> tuple[dict | None, int, dict]:
        """(the shared state database's URL and whether it answers, rewards so far, active learning's status) for
        /info, which answers while the database is down (a load balancer's health check reads it): the rewards
        last read and the message stand in for what the database would say."""
        state = None
        if self.state_db is not None:
            state = {"url": self.state_db.shown, "reachable": True}
        try:
            rewards = loop.ledger.reward_count() if loop else 0
            active_learning = self.active_learning.status()
        except StateUnavailable as exc:
            state = {**(state or {}), "reachable": False, "message": exc.message}
            rewards = len(loop.ledger.reward_order) if loop else 0
            active_learning = {"error": exc.message}
        return state, rewards, active_learning

    def _review_status(self) -> dict:
        """For /info: whether review is on, how many labels wait for a reviewer, the reads' agreement."""
        try:
            return self.desk.status()
        except StateUnavailable as exc:
            return {"on": self.seer_settings.review, "error": exc.message}

    def check_state_db(self) -> None:
        """StateUnavailable (503) when the shared state database does not answer: a save is refused before
        anything is stored, so the annotator saves again rather than losing what the save would teach."""
        if self.state_db is not None:
            self.state_db.ping()

    def init_strategies(self):
        return {"seer": SeerStrategy(self.active_learning), "random": Random(), "first": First()}

    def check_study_id(self, image: str) -> None:
        """404 unless `image` is a study id of the datastore: never a file path (the same sentence whether or not a
        file of that name exists). A DICOMweb id must be a DICOM UID; the PACS is asked when the study is opened."""
        datastore = self.datastore()
        pacs = isinstance(datastore, SeerDICOMwebDatastore)
        if is_uid(image) if pacs else image in datastore.list_images():
            return
        shown = image if len(image) <= 80 else image[:77] + "..."
        raise HTTPException(404, f"No study with id '{shown}' in the datastore: a study is named by its id, never by "
                            "a path (GET /datastore/?output=all lists them).")

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
        try:
            self._notice_label_changes()
            self._sync_skill_bank()
            return super().infer(request, datastore)
        except SeerError as exc:
            raise HTTPException(exc.status, exc.message) from None

    def on_save_label(self, image_id, label_id, annotator: str | None = None, took_label: bool = True):
        """A saved final label makes its study an atlas (refresh the backbone's atlas list and label table) and
        queues the rewards of its proposals (computed in the background: the save returns at once). annotator: who
        saved a final read (a lease_holder key), for active learning's reads per study; took_label: whether the
        save became the datastore's label (not when it was kept beside an approved one)."""
        super().on_save_label(image_id, label_id)
        if took_label:
            self._label_changed(image_id)
        if annotator is not None or image_id in self._labels_seen:  # a final label (not a draft)
            try:
                self.active_learning.on_saved(image_id, annotator)
            except StateUnavailable as exc:  # the label is stored; the next scan marks the study labelled
                logger.warning("saved label of %s: the state database did not take it yet: %s", image_id,
                               exc.message)
        try:
            if took_label and self.annotation is not None and self.teaches(image_id):
                self.annotation.submit(image_id)
        except StateUnavailable as exc:  # the label is stored; the next scan rewards it once it may teach
            logger.warning("saved label of %s: rewards wait for the state database: %s", image_id, exc.message)
        return {}

    def _label_changed(self, image_id: str) -> None:
        """The study's final label file changed through this server: the atlases and the label signature follow."""
        try:
            self.pipeline.backbone.refresh()
        except Exception:  # noqa: BLE001 - saving must succeed even if an atlas is unreadable
            logger.exception("atlas refresh after saving %s failed", image_id)
        with self._labels_lock:
            self._labels_seen = self._labels_signature()

    # -- review (seer.review.desk) -----------------------------------------------------------------------------------
    def _teaching_studies(self) -> list[str]:
        """The studies with a final label that may teach (the annotation loop's scan)."""
        return self.desk.teaching(list(self.datastore().get_labeled_images(DefaultLabelTag.FINAL)))

    def teaches(self, image_id: str) -> bool:
        return self.desk.teaches(image_id)

    def record_read(self, image_id: str, annotator: str, tag: str, path: str, label_info: dict,
                    took_label: bool) -> dict:
        """A save by `annotator` (a lease_holder key): its read becomes a draft, submitted, or (review off) approved;
        a final read's file is kept (seer.review.desk); its agreement comes from `read_agreement`."""
        return self.desk.saved(image_id, annotator, tag, path, label_info, took_label, compare=False)

    def read_agreement(self, image_id: str, annotator: str, path: str, label_info: dict, read: dict) -> list[dict]:
        """A recorded final read's agreement with the study's other reads (seer.review.desk), computed outside the
        study's lock: a reviewer's decision on the study does not wait for it."""
        try:
            return self.desk.agreement_of(image_id, annotator, path, label_info, read.get("kept", False))
        except StateUnavailable as exc:  # the read is saved; its agreement is computed by the next save
            logger.warning("agreement of %s on %s not computed: %s", annotator, image_id, exc.message)
            return []

    def label_provenance(self, image_id: str, annotator: str, names: dict[int, str]) -> dict:
        """What a label being saved came from (seer.review.desk.provenance), for its label info: who saves it, and
        the newest SEER request that proposed each of its targets on this study."""
        try:
            traces = self._traces_for_label(image_id, names) if names else []
        except StateUnavailable:
            traces = []
        return provenance(annotator, traces, time.time())

    def _write_final_label(self, image_id: str, path, label_info: dict, approved: bool) -> None:
        """ReviewDesk's write_label: a kept read becomes the study's final label in the datastore (with the PACS,
        stored as a SEG once approved)."""
        datastore = self.datastore()
        info = {k: v for k, v in label_info.items() if k not in ("segmentationMeta", "pending_seg")}
        if isinstance(datastore, SeerDICOMwebDatastore):
            datastore.save_label(image_id, str(path), DefaultLabelTag.FINAL.value, info, reviewed=approved)
        else:
            datastore.save_label(image_id, str(path), DefaultLabelTag.FINAL.value, info)
        self._label_changed(image_id)

    def _teach(self, image_id: str, written: bool) -> None:
        """ReviewDesk's teach: an approved study becomes an atlas and its proposals are rewarded. With the PACS and
        store_seg, the approved read goes to the PACS as a SEG: the copy awaiting review here, or (another server
        took the save) its mask kept in the state database."""
        datastore = self.datastore()
        holder = self.reads.holder(image_id)
        adopted = holder is not None and holder["annotator"] == DATASTORE_READER  # it came from there already
        if isinstance(datastore, SeerDICOMwebDatastore) and datastore.store_seg and not written and not adopted:
            try:
                read_id = self.desk.approved_read_id(image_id)
                if not datastore.store_reviewed_seg(image_id, read_id):
                    self.desk.write_approved(image_id)
            except HTTPException as exc:  # the approval stands; sending it again stores the SEG
                logger.warning("approved label of %s not stored in the PACS (approve it again to retry): %s",
                               image_id, exc.detail)
        try:
            self.pipeline.backbone.refresh()
        except Exception:  # noqa: BLE001 - the decision stands even if an atlas is unreadable
            logger.exception("atlas refresh after approving %s failed", image_id)
        if self.annotation is not None:
            self.annotation.submit(image_id)

    def _withdraw(self, image_id: str, reason: str, by: str) -> list[str]:
        """ReviewDesk's withdraw: the study's rewards are taken back (trace log) and it leaves the atlases."""
        withdrawn = self.annotation.ledger.withdraw(image_id, reason, by) if self.annotation is not None else []
        try:
            self.pipeline.backbone.refresh()
        except Exception:  # noqa: BLE001 - the decision stands even if an atlas is unreadable
            logger.exception("atlas refresh after rejecting %s failed", image_id)
        logger.info("review: %d rewards of %s withdrawn (%s)", len(withdrawn), image_id, reason)
        return withdrawn

    def review(self, image_id: str, annotator: str, decision: str, reviewer: str, comment: str = "",
               mirror: bool = True) -> dict:
        """A reviewer's decision (SeerError with its status for bad input); what it changes is ReviewDesk.decide.
        mirror: write it into the final label's info as the Slicer Reviewer module reads it (not when the decision
        came from there)."""
        # one's own label: the same user (auth on: the user, whatever the client); with auth off the same client
        own = (split_holder(reviewer)[0] == split_holder(annotator)[0] if monailabel_settings.MONAI_LABEL_AUTH_ENABLE
               else reviewer == annotator)
        with self.reads.study_lock(image_id):  # never between a save's check and its recorded read
            if annotator == DATASTORE_READER and isinstance(decision, str) and \
                    decision.strip().lower() in DECISIONS:
                self._adopt_label(image_id)
            read = self.desk.decide(image_id, annotator, decision, reviewer, comment, own=own)
        logger.info("review: %s's label on %s %s by %s", annotator, image_id, read["state"], reviewer)
        if mirror:
            self._mirror_review(image_id, read)
        return read

    def _adopt_label(self, image_id: str) -> None:
        """A final label in the datastore that no read holds (copied in by hand, a SEG from another tool, saved
        before review was on) becomes the read of DATASTORE_READER ("datastore"), so a reviewer can decide on it."""
        if self.reads.holder(image_id) is not None or any(r["submitted_at"] for r in self.reads.reads(image_id)):
            return
        datastore = self.datastore()
        path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
        if path and os.path.isfile(path):
            self.desk.adopt(image_id, path, datastore.get_label_info(image_id, DefaultLabelTag.FINAL) or {})

    def _mirror_review(self, image_id: str, read: dict) -> None:
        """Write a decision into the final label's info as the Slicer MONAI Label Reviewer module reads it
        (`segmentationMeta`: status approved / flagged, approvedBy, comment, editTime)."""
        status = {"approved": "approved", "rejected": "flagged"}.get(read["state"])
        if status is None:
            return
        holder = self.reads.holder(image_id)
        if status == "flagged" and holder is not None and holder["annotator"] != read["annotator"]:
            return  # the label now holds another read: its info is that read's
        meta = {"status": status, "approvedBy": read.get("reviewer") or "", "comment": read.get("comment") or "",
                "editTime": int(read.get("decided_at") or time.time())}
        try:
            self.datastore().update_label_info(image_id, DefaultLabelTag.FINAL.value, {"segmentationMeta": meta})
        except Exception as exc:  # noqa: BLE001 - the decision stands; the label info is a mirror
            logger.warning("review of %s not written into its label info: %s", image_id, exc)

    def review_from_label_info(self, image_id: str, tag: str, info: dict, reviewer: str) -> dict | None:
        """The Slicer Reviewer module's `segmentationMeta` status on a final label, as a decision on the read the
        label holds: "approved" approves, "flagged" rejects (its comment, else a sentence saying where it came
        from). None when the info carries no such status or it changes nothing."""
        meta = info.get("segmentationMeta") if isinstance(info, dict) else None
        status = str(meta.get("status") or "").strip().lower() if isinstance(meta, dict) else ""
        if tag != DefaultLabelTag.FINAL.value or status not in ("approved", "flagged"):
            return None
        with self.reads.study_lock(image_id):  # the read the module shows is the one decided on
            self._adopt_label(image_id)
            decision = self.desk.from_label_info(image_id, status, str(meta.get("comment") or "").strip())
            if decision is None:
                return None
            annotator, decision, comment = decision
            return self.review(image_id, annotator, decision, reviewer, comment, mirror=False)

    # -- datastore atlases and rewards ---------------------------------------------------------------------------
    def _labels_signature(self) -> dict[str, tuple[int, bool]]:
        """study -> (mtime in ns of its final label file, whether it may teach). With review on, a decision taken on
        another server sharing the state database changes the second part, so this server's atlases follow it."""
        datastore = self.datastore()
        approved = None
        if self.seer_settings.review:
            try:
                approved = self.reads.approved_studies()
            except StateUnavailable:  # keep what was seen until the database answers
                seen = getattr(self, "_labels_seen", {})
                approved = {study for study, (_, teaches) in seen.items() if teaches}
        signature = {}
        for image_id in datastore.get_labeled_images(DefaultLabelTag.FINAL):
            path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
            try:
                signature[image_id] = (os.stat(path).st_mtime_ns, approved is None or image_id in approved)
            except OSError:
                continue
        return signature

    def _notice_label_changes(self) -> None:
        """Labels copied into labels/final by hand (no PUT) become atlases and earn rewards on the next request."""
        with self._labels_lock:
            self._notice_label_changes_locked()

    def _notice_label_changes_locked(self) -> None:
        signature = self._labels_signature()
        if signature == self._labels_seen:
            return
        changed = [s for s, stamp in signature.items() if self._labels_seen.get(s) != stamp]
        if self.seer_settings.datastore_atlases:
            try:
                self.pipeline.backbone.refresh()
            except Exception:  # noqa: BLE001 - the request goes on with the atlases it had; retried next time
                logger.exception("atlas refresh after a label change failed")
                return
        self._labels_seen = signature
        if self.annotation is not None:
            for study in changed:
                try:
                    if self.teaches(study):
                        self.annotation.submit(study)
                except StateUnavailable:  # the next scan rewards it once the database answers
                    break

    def _datastore_atlases(self) -> list[AtlasSource]:
        """Every datastore study with a final label whose values are named (`label_names`, or Slicer's
        `label_info`). A label without names is not guessed to hold this app's ids: it is left out, with the
        reason logged and shown in /info (`seer.labels_not_atlases`)."""
        if not self.seer_settings.datastore_atlases:
            return []
        datastore = self.datastore()
        sources = []
        before, not_atlases = self.not_atlases, {}  # rebuilt, then swapped: /info never reads it half-built
        approved = self.reads.approved_studies() if self.seer_settings.review else None
        for image_id in datastore.get_labeled_images(DefaultLabelTag.FINAL):
            if approved is not None and image_id not in approved:
                not_atlases[image_id] = "its label waits for a reviewer's approval (setting review)"
                continue
            image_path = datastore.get_image_uri(image_id)
            label_path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
            if not (image_path and label_path and os.path.isfile(image_path) and os.path.isfile(label_path)):
                continue
            names = label_names_from_info(datastore.get_label_info(image_id, DefaultLabelTag.FINAL))
            if names:
                sources.append(AtlasSource(f"datastore:{image_id}", image_path, label_path, names, "datastore"))
            else:
                why = ("it was saved without label_names or label_info, so its values cannot be named (a label from "
                       "another tool would become a wrongly named atlas); save it again with label_names "
                       "{name: value}" if names is None else "its label_names / label_info name no usable value")
                if before.get(image_id) != why:
                    logger.warning("The final label of %s is not used as an atlas: %s.", image_id, why)
                not_atlases[image_id] = why
        self.not_atlases = not_atlases
        return sources
