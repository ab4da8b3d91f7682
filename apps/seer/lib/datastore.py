"""MONAI Label's DICOMweb datastore, adapted for SEER Label (a PACS such as Orthanc behind `--studies URL`).

What changes against the stock `DICOMWebDatastore`:
- errors a viewer can show: an unknown series UID -> 404, a series that is not an image (SEG, SR, ...) -> 422, the
  PACS unreachable -> 503 naming its URL; studies already in the local cache keep working while the PACS is down;
- series are listed by modality (`dicomweb_modalities`, CT and MR by default), re-read after `dicomweb_cache_s`
  (not two hours) and at once after a label is saved;
- a study's final label is its newest SEG series in the PACS (matched through ReferencedSeriesSequence), read
  with highdicom onto the study's grid with the segment labels as names, or the label saved on this server when
  the SEG was not stored; an unreadable SEG is logged and skipped, never raised into the server's start;
- a saved final label is kept in the local cache first; with `store_seg` it is also written as a DICOM SEG whose
  segments are coded from this server's label table (seer.pacs.dicom_seg) and stored over STOW-RS.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from cachetools import TTLCache
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore, LocalDatastoreModel
from monailabel.datastore.utils.convert import binary_to_image, dicom_to_nifti
from monailabel.datastore.utils.dicom import dicom_web_upload_dcm
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from seer.errors import SeerError
from seer.pacs.dicom_seg import check_segments, read_seg, write_seg
from seer.pacs.dicomweb_paths import is_uid

logger = logging.getLogger(__name__)

IMAGE_MODALITIES_DEFAULT = ("CT", "MR")
STORED_AS_IS = (("application/dicom", "*"),)  # WADO-RS: any transfer syntax, i.e. as stored
NOT_IMAGES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "FID", "OT"}


class SeerLocalDatastore(LocalDatastore):
    """MONAI Label's datastore over a local studies folder, reloading `datastore_v2.json` safely when another server
    on the same folder rewrote it: the re-read model replaces the current one only once it has its base path.
    (MONAI Label assigns the model first and its base path on the next line; a save on another thread between the
    two wrote the label under the server's working directory instead of the studies folder.)"""

    def _init_from_datastore_file(self, throw_exception=False):
        try:
            with FileLock(self._lock_file):
                if os.path.exists(self._datastore_config_path):
                    stamp = os.stat(self._datastore_config_path).st_mtime
                    if self._config_ts != stamp:
                        with open(self._datastore_config_path) as fp:
                            model = LocalDatastoreModel.model_validate_json(fp.read())
                        model.base_path = self._datastore_path
                        self._datastore = model
                        self._config_ts = stamp
        except ValueError as exc:
            logger.error("datastore file %s not reloaded: %s", self._datastore_config_path, exc)
            if throw_exception:
                raise


class PacsUnavailable(HTTPException):
    def __init__(self, url: str, error: Exception):
        super().__init__(503, f"The PACS at {url} cannot be reached ({type(error).__name__}); studies already "
                         "cached on this server still work. Check that it is running, then retry.")


class SeriesNotFound(HTTPException):
    def __init__(self, uid: str, url: str):
        super().__init__(404, f"No series with SeriesInstanceUID '{uid}' in the PACS at {url} (GET "
                         "/datastore/?output=all lists the studies this server sees).")


class NotAnImage(HTTPException):
    def __init__(self, uid: str, modality: str):
        super().__init__(422, f"Series '{uid}' is a {modality} series, not an image: open the image series it "
                         "belongs to (CT or MR) and run SEER on that.")


def _value(dataset_json: dict, tag: str, default: str = "") -> str:
    values = dataset_json.get(tag, {}).get("Value") or [default]
    return str(values[0])


class SeerDICOMwebDatastore(DICOMWebDatastore):
    def __init__(
        self,
        client,
        search_filter: dict[str, Any],
        cache_path: str | None,
        fetch_by_frame: bool,
        convert_to_nifti: bool,
        *,
        modalities: tuple[str, ...] = IMAGE_MODALITIES_DEFAULT,
        cache_s: float = 60.0,
        store_seg: bool = False,
        seg_after_review: bool = False,
        names_for_label: Callable[[dict, list[int]], dict[int, str]] | None = None,
        traces_for_label: Callable[[str, dict[int, str]], list[dict]] | None = None,
    ):
        super().__init__(client, search_filter, cache_path, fetch_by_frame, convert_to_nifti)
        self._url = str(client.base_url)
        self._modalities = tuple(m.upper() for m in modalities)
        self.store_seg = store_seg
        # review on: a final label is stored as a SEG only once a reviewer approves it (`reviewed`)
        self.seg_after_review = seg_after_review
        self._names_for_label = names_for_label
        self._traces_for_label = traces_for_label
        self._lock = threading.RLock()
        # the PACS's image series and its SEG index, each re-read after `cache_s` (or at once after a save)
        self._lists: TTLCache = TTLCache(maxsize=2, ttl=cache_s)
        self._seg_refs: dict[str, str] = {}  # SEG series -> referenced image series (immutable once read)
        self._unreadable: dict[str, tuple[str, str]] = {}  # image -> (SEG series, why it could not be read)
        self._seg_dir = pathlib.Path(self._datastore_path) / ".seer" / "pacs-seg"

    # -- PACS queries ----------------------------------------------------------------------------------------------
    def _pacs(self, call: Callable, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(self._url, exc) from None

    def _listed(self, key: str, read: Callable):
        with self._lock:
            if key in self._lists:
                return self._lists[key]
        value = read()
        with self._lock:
            self._lists[key] = value
        return value

    def _image_series(self) -> list[dict]:
        """QIDO rows of the PACS's image series (`modalities`)."""
        def read() -> list[dict]:
            return [row for modality in self._modalities for row in self._pacs(
                self._client.search_for_series, search_filters={**self._search_filter, "Modality": modality})]

        return self._listed("series", read)

    def list_images(self) -> list[str]:
        try:
            return [uid for uid in (_value(row, "0020000E") for row in self._image_series()) if is_uid(uid)]
        except PacsUnavailable as exc:
            cached = super(DICOMWebDatastore, self).list_images()
            logger.warning("%s Listing the %d cached studies.", exc.detail, len(cached))
            return cached

    def _check_series(self, image_id: str) -> str:
        """The series' StudyInstanceUID; 404 / 422 / 503 for a series this server cannot open as an image."""
        rows = self._pacs(self._client.search_for_series, search_filters={"SeriesInstanceUID": image_id})
        rows = [r for r in rows if _value(r, "0020000E") == image_id]
        if not rows:
            raise SeriesNotFound(image_id, self._url)
        modality = _value(rows[0], "00080060", "unknown").upper()
        if modality in NOT_IMAGES:
            raise NotAnImage(image_id, modality)
        return _value(rows[0], "0020000D")

    def _in_cache(self, image_id: str, suffix: str = "") -> str:
        """The cache path of a series (`suffix` ".nii.gz" for its image, "" for its DICOM folder): only a DICOM UID
        names a series, and the joined path must stay in the cache folder; anything else is 404, the same reply
        whether or not such a file exists."""
        root = os.path.realpath(self._datastore.image_path())
        if not is_uid(image_id):
            raise SeriesNotFound(str(image_id)[:80], self._url)
        path = os.path.realpath(os.path.join(root, f"{image_id}{suffix}"))
        if os.path.dirname(path) != root:
            raise SeriesNotFound(str(image_id)[:80], self._url)
        return path

    def _cached_image(self, image_id: str) -> str:
        path = self._in_cache(image_id, ".nii.gz")
        return path if os.path.exists(path) else ""

    def get_image_uri(self, image_id: str) -> str:
        cached = self._cached_image(image_id)
        if cached:
            return cached
        study = self._check_series(image_id)
        with self._lock:  # one download per series
            cached = self._cached_image(image_id)
            return cached or self._pacs(self._download_image, image_id, study)

    def _download_image(self, image_id: str, study: str) -> str:
        """Fetch the series in its stored transfer syntax (`*`: the PACS sends JPEG 2000 as it is instead of
        transcoding, which Orthanc cannot do without its GDCM plugin) and convert it to NIfTI as the stock
        datastore does."""
        image_dir = self._in_cache(image_id)
        if not (os.path.isdir(image_dir) and os.listdir(image_dir)):
            partial = image_dir + ".part"
            os.makedirs(partial, exist_ok=True)
            for instance in self._client.retrieve_series(study, image_id, media_types=STORED_AS_IS):
                instance.save_as(os.path.join(partial, f"{instance.SOPInstanceUID}.dcm"))
            os.replace(partial, image_dir)
        if not self._convert_to_nifti:
            return image_dir
        nifti = dicom_to_nifti(image_dir)
        LocalDatastore.add_image(self, image_id, nifti, self._dicom_info(image_id))
        return self._cached_image(image_id)

    def series_dir(self, image_id: str) -> str:
        """The folder of the study's DICOM files in the cache (downloaded with the image)."""
        self.get_image_uri(image_id)
        return self._in_cache(image_id)

    # -- SEG series in the PACS --------------------------------------------------------------------------------------
    def _seg_index(self) -> dict[str, list[tuple[str, str, str]]]:
        """image series -> [(SEG series, study, series date+time)], newest last."""
        return self._listed("segs", self._read_seg_index)

    def _read_seg_index(self) -> dict[str, list[tuple[str, str, str]]]:
        index: dict[str, list[tuple[str, str, str]]] = {}
        for row in self._pacs(self._client.search_for_series, search_filters={"Modality": "SEG"}):
            seg, study = _value(row, "0020000E"), _value(row, "0020000D")
            if not (is_uid(seg) and is_uid(study)):  # its UIDs name files in the cache: nothing else is taken
                logger.warning("SEG series %r ignored: its UIDs are not DICOM UIDs", seg[:80])
                continue
            when = _value(row, "00080021") + _value(row, "00080031")
            image = self._seg_refs.get(seg)
            if image is None:
                try:
                    meta = Dataset.from_json(self._pacs(self._client.retrieve_series_metadata, study, seg)[0])
                    image = str(meta.ReferencedSeriesSequence[0].SeriesInstanceUID)
                except HTTPException:
                    raise
                except Exception as exc:  # noqa: BLE001 - one SEG without a usable reference is skipped, not fatal
                    logger.warning("SEG series %s ignored: no ReferencedSeriesSequence (%s)", seg, exc)
                    image = ""
                self._seg_refs[seg] = image
            if image:
                index.setdefault(image, []).append((seg, study, when))
        for segs in index.values():
            segs.sort(key=lambda s: s[2])
        return index

    def _forget(self) -> None:
        with self._lock:
            self._lists.clear()

    def _pacs_segs(self) -> dict[str, list[tuple[str, str, str]]]:
        try:
            return self._seg_index()
        except PacsUnavailable as exc:
            logger.warning("%s Only labels cached on this server are used.", exc.detail)
            return {}

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        local = LocalDatastore.get_labeled_images(self, label_tag, labels)
        if label_tag not in (None, DefaultLabelTag.FINAL):
            return local
        images = set(self.list_images())
        pacs = {image for image, segs in self._pacs_segs().items()
                if self._unreadable.get(image, ("",))[0] != segs[-1][0]}
        return sorted((pacs & images) | set(local))

    def unreadable_labels(self) -> dict[str, str]:
        """study -> why its newest SEG could not be read (it is then neither labelled nor an atlas)."""
        return {image: f"SEG {seg}: {why}" for image, (seg, why) in self._unreadable.items()}

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [s for s in self.list_images() if s not in labelled]

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The study's final label: its newest SEG in the PACS (read once, then cached), else the label saved on
        this server. `label_id` is the image series UID (MONAI Label names labels after their image). Returns ""
        when there is none or it cannot be read (logged with the reason)."""
        image_id = image_id or label_id
        local = LocalDatastore.get_label_uri(self, image_id, label_tag)
        if label_tag != DefaultLabelTag.FINAL:
            return local
        segs = self._pacs_segs().get(image_id)
        if not segs:
            return local
        seg, study, when = segs[-1]
        info = LocalDatastore.get_label_info(self, image_id, label_tag) if local else {}
        if local and (info.get("SeriesInstanceUID") == seg or info.get("pending_seg") or (
                info.get("awaiting_review") and info.get("over_seg", "") == seg)):
            # this SEG is the label already here, or a newer local save waits to be stored (or, review on, to be
            # approved: until a newer SEG arrives from a server where a reviewer approved a read)
            return local
        try:
            path = self._import_seg(image_id, seg, study)
            self._unreadable.pop(image_id, None)
            return path
        except HTTPException as exc:  # the PACS is down: tried again next time
            logger.warning("Final label of %s: SEG %s not read: %s", image_id, seg, exc.detail)
        except Exception as exc:  # noqa: BLE001 - an unreadable label never stops the server
            self._unreadable[image_id] = (seg, f"{type(exc).__name__}: {exc}")
            logger.warning("Final label of %s: SEG %s is not readable and is skipped (not an atlas, not counted as "
                           "labelled): %s", image_id, seg, exc)
        return local

    def _import_seg(self, image_id: str, seg: str, study: str) -> str:
        image = self.get_image_uri(image_id)
        self._seg_dir.mkdir(parents=True, exist_ok=True)
        seg_file = self._seg_dir / f"{seg}.dcm"
        if not seg_file.exists():
            instances = self._pacs(self._client.retrieve_series, study, seg, media_types=STORED_AS_IS)
            if not instances:
                raise ValueError("the SEG series has no instance")
            tmp = seg_file.with_suffix(".part")
            instances[0].save_as(str(tmp))
            os.replace(tmp, seg_file)
        label = self._seg_dir / f"{seg}.nii.gz"
        names = read_seg(seg_file, self.series_dir(image_id), image, label)
        info = {"label_names": names, "SeriesInstanceUID": seg, "source": "pacs"}
        LocalDatastore.save_label(self, image_id, str(label), DefaultLabelTag.FINAL, info)
        logger.info("Final label of %s read from SEG %s: %s", image_id, seg, ", ".join(names))
        return LocalDatastore.get_label_uri(self, image_id, DefaultLabelTag.FINAL)

    # -- saving ------------------------------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "", reviewed: bool = False) -> str:
        """Keep the label here first (nothing is lost if the PACS fails), then, for a final label with
        `store_seg`, store it as a coded DICOM SEG over STOW-RS; with `seg_after_review` only when `reviewed` (an
        approved read), else it waits here, marked `awaiting_review`, for `store_reviewed_seg`."""
        image = self.get_image_uri(image_id)
        converted = ""
        if "".join(pathlib.Path(label_filename).suffixes) == ".bin":
            converted = binary_to_image(image, label_filename)
            label_filename = converted
        try:
            final = label_tag == DefaultLabelTag.FINAL
            store = final and self.store_seg and (reviewed or not self.seg_after_review)
            label_info = dict(label_info or {})
            for key in ("pending_seg", "awaiting_review", "over_seg", "SeriesInstanceUID", "segments"):
                label_info.pop(key, None)  # what a kept read carried from an earlier life in the datastore
            names: dict[int, str] = {}
            if final:  # named for its SEG now, also when the SEG waits for a review
                names = self._segment_names(label_filename, label_info, required=final and self.store_seg)
                if names:  # what the label's values mean, table first: atlases and rewards read this
                    label_info["label_names"] = {name: value for value, name in sorted(names.items())}
            if store:
                label_info["pending_seg"] = True
            elif final and self.store_seg:  # waits for a reviewer; a SEG stored later elsewhere replaces it
                segs = self._pacs_segs().get(image_id)
                label_info.update(awaiting_review=True, over_seg=segs[-1][0] if segs else "")
            saved = LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
            if store:
                self._store_seg(image_id, label_filename, names, label_info)
            self._forget()
            return saved
        finally:
            if converted and os.path.exists(converted):
                os.unlink(converted)

    def store_reviewed_seg(self, image_id: str, read_id: str | None) -> bool:
        """Store the final label kept here while it awaited review as its SEG, once a reviewer approved it: only when
        it is that read (`read_id`, the id in its `seer_provenance`; this server may hold another read's copy).
        False when no such copy waits here (or its SEG is stored already)."""
        if not self.store_seg or not read_id:
            return False
        info = LocalDatastore.get_label_info(self, image_id, DefaultLabelTag.FINAL)
        path = LocalDatastore.get_label_uri(self, image_id, DefaultLabelTag.FINAL)
        waiting = info.get("awaiting_review") or info.get("pending_seg")  # pending: an earlier try failed
        if not (waiting and path) or (info.get("seer_provenance") or {}).get("read_id") != read_id:
            return False
        names = self._segment_names(path, info, required=True)
        self._store_seg(image_id, path, names, info)
        stored = LocalDatastore.get_label_info(self, image_id, DefaultLabelTag.FINAL)
        stored.pop("awaiting_review", None)
        stored.pop("over_seg", None)
        LocalDatastore.update_label_info(self, image_id, DefaultLabelTag.FINAL, stored)
        self._forget()
        return True

    def _segment_names(self, label_file: str, label_info: dict, required: bool) -> dict[int, str]:
        """value -> name for every value of the label (`names_for_label`); with `required` (the label becomes a
        SEG) an empty label or an unnamed value is refused with 422 before anything is saved."""
        import numpy as np
        import SimpleITK as sitk

        values = [int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(label_file))) if v != 0]
        try:
            names = self._names_for_label(label_info, values) if self._names_for_label else {}
            check_segments(values, names)
        except SeerError as exc:
            if required:
                raise HTTPException(exc.status, exc.message) from None
            return {}
        return names

    def _label_traces(self, image_id: str, names: dict[int, str], label_info: dict) -> list[dict]:
        """The SEER requests behind a label ({"id", "request"} per target, sorted by target): from the provenance
        its save already put in its info (no second read of the study's history), else from the trace history."""
        proposed = (label_info.get("seer_provenance") or {}).get("proposed_by")
        if isinstance(proposed, list):
            wanted = set(names.values())
            return [{"id": p.get("trace_id"), "request": p.get("request")}
                    for p in sorted((p for p in proposed if isinstance(p, dict) and p.get("target") in wanted),
                                    key=lambda p: str(p.get("target")))]
        return self._traces_for_label(image_id, names) if self._traces_for_label else []

    def _store_seg(self, image_id: str, label_file: str, names: dict[int, str], label_info: dict) -> None:
        """Write the SEG (segments from `names`; content description: the SEER requests that proposed these
        targets on this study) and store it; its UID, segments and trace ids go into the label's info."""
        self._seg_dir.mkdir(parents=True, exist_ok=True)
        out = self._seg_dir / f"upload-{image_id}-{int(time.time() * 1000)}.dcm"
        traces = self._label_traces(image_id, names, label_info)
        targets = ", ".join(names[v] for v in sorted(names))
        # the SEER requests behind the label (newest per target), where viewers show them: the content description
        requests_text = "; ".join(str(t.get("request") or "") for t in traces if t.get("request"))
        try:
            written = write_seg(label_file, self.series_dir(image_id), out, names,
                                series_description=f"SEER final: {targets}",
                                content_description=requests_text or f"final label: {targets}")
        except SeerError as exc:
            raise HTTPException(exc.status, f"The label was saved on this server but not stored in the PACS: "
                                f"{exc.message}") from None
        try:
            series = self._pacs(dicom_web_upload_dcm, str(out), self._client)
        except PacsUnavailable as exc:
            raise HTTPException(503, f"The label was saved on this server; storing its DICOM SEG failed: "
                                f"{exc.detail}") from None
        finally:
            if out.exists():
                os.replace(out, self._seg_dir / f"{written['series_uid']}.dcm")
        info = LocalDatastore.get_label_info(self, image_id, DefaultLabelTag.FINAL)
        info.pop("pending_seg", None)
        info.update(SeriesInstanceUID=series or written["series_uid"], segments=written["segments"],
                    seer_traces=[t.get("id") for t in traces])
        LocalDatastore.update_label_info(self, image_id, DefaultLabelTag.FINAL, info)
        logger.info("Final label of %s stored in the PACS as SEG %s (%s)", image_id, info["SeriesInstanceUID"],
                    ", ".join(s["label"] for s in written["segments"]))

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        for image_id in self.get_labeled_images(DefaultLabelTag.FINAL):
            self.get_label_uri(image_id, DefaultLabelTag.FINAL)
        return LocalDatastore.datalist(self, full_path)
