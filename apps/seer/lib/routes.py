"""Routes of SEER Label that replace MONAI Label's stock ones for next-sample and scoring, installed in front of
them on the server's FastAPI app (MONAI Label's router extension point; the stock routes stay for everything
else).

- POST /activelearning/{strategy}: unknown strategy -> 404 naming the available ones (stock: 500). `seer` is
  answered from the state database: no whole-datastore JSON rewrite, no `/info` assembly per call; the stock
  strategies keep their stock behaviour.
- POST /activelearning/seer/release?image=ID&client_id=C: end a lease before it expires. A lease is held by the
  user narrowed by the `client_id` it was taken with (lib.activelearning.seer.lease_identity); only that holder or
  an admin ends it: another client -> 403 (nothing changes), the holder's user without the `client_id` -> 422
  naming the parameter, an unknown study -> 404, a study nobody holds -> 200 with `released` false.
- POST /scoring/{method}: unknown method -> 404; `seer` starts a pass in this process's background worker
  (`run_sync=true` waits for it and returns its summary).
- GET /seer/trace/{image}?limit=10: SEER's newest traces on a study (request, evidence, rationale, answer, target
  or refusal), newest first; for viewers that show no reply text (OHIF).
- POST /infer/{model}: run on the thread pool, at most `infer_concurrency` at once (waiting requests queue on a
  semaphore and hold no thread), so /info, next-sample and saves answer while inferences run; params that are
  not a JSON object -> 422. output=dicom_seg: the DICOM SEG is written from the resolved target (segment label,
  SNOMED CT type and laterality: seer.pacs.dicom_seg), not from a client's `label_info`; other outputs are stock.
- GET /datastore/image, GET /datastore/label: stock downloads, for study ids only (a path is 404 with the same
  sentence whether or not the file exists).
- PUT /datastore/label: the upload is checked before anything is stored (readable, on the study's grid, whole
  values 0..65535, every value of a final label named: the client's names first, this server's table for the
  rest, a contradiction refused), then saved by the stock datastore on the thread pool; an unknown study -> 404,
  bad params, tag or label -> 422, an upload larger than any label of the study -> 413. With a shared state
  database (`state_db`) that does not answer: 503 before anything is stored ("The label was not saved: ...").
- A shared state database that does not answer makes next-sample, release, scoring and /seer/trace 503 with a
  sentence; inference goes on (its trace waits in the server's spool) and /info reports `state_db.reachable`.
- GET/POST /proxy/dicom/...: MONAI Label's DICOMweb proxy (OHIF's only way to the PACS), for DICOMweb resources
  only (seer.pacs.dicomweb_paths: anything else, dot segments in any encoding included, is 400 and never reaches
  the PACS); POST is STOW-RS only and needs the annotator role; redirects are not followed, so the PACS
  credentials go to DICOMweb URLs only. Forwards the viewer's Accept header so that the PACS sends frames in a
  transfer syntax the viewer decodes (JPEG 2000 as stored) instead of transcoding; 503 with the URL when the
  PACS is down. Runs off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import tempfile

import requests
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.responses import FileResponse, Response
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType
from monailabel.endpoints.user.auth import RBAC, User, get_current_user
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import remove_file
from starlette.concurrency import run_in_threadpool

from seer.active_learning.study_state import Release, checked_client_id
from seer.errors import RequestTooLarge, SeerError, StateUnavailable
from seer.imaging.label_file import check_label_file, label_suffix, upload_limit_bytes
from seer.loop.rewards import label_names_from_info
from seer.loop.saved_labels import name_label_values
from seer.pacs.dicom_seg import write_seg
from seer.pacs.dicomweb_paths import check_proxy_path

logger = logging.getLogger(__name__)

LABEL_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a tag names a folder of the datastore: never a path


def _copy_bounded(source, path: str, limit: int) -> None:
    """Copy an upload to `path`, refusing (413) one longer than `limit` bytes before it is all read."""
    copied = 0
    with open(path, "wb") as out:
        while chunk := source.read(1 << 20):
            copied += len(chunk)
            if copied > limit:
                raise RequestTooLarge(f"The label upload is over {limit >> 20} MiB, more than any label of this "
                                      "study can take (8 bytes a voxel plus a header).")
            out.write(chunk)


class AnyRole(RBAC):
    """MONAI Label's role check for several roles, any one of which will do; the 403 names them all (the stock
    one names only the last)."""

    async def __call__(self, user: User = Security(get_current_user)):
        try:
            return await super().__call__(user)
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            raise HTTPException(403, f"One of the roles {', '.join(self.roles)} is required to perform this "
                                "action.") from None


def answered(route):
    """A route whose SeerError (a StateUnavailable when the shared state database is down: 503) is an HTTP error
    carrying its sentence."""
    @functools.wraps(route)
    def wrapper(*args, **kwargs):
        try:
            return route(*args, **kwargs)
        except SeerError as exc:
            raise HTTPException(exc.status, exc.message) from None

    return wrapper


def checked(check, value):
    """`check(value)`, with a SeerError as an HTTP error carrying its sentence."""
    try:
        return check(value)
    except SeerError as exc:
        raise HTTPException(exc.status, exc.message) from None


def install(app) -> None:
    """Put the routes in front of the stock ones on MONAI Label's FastAPI app (`monailabel.app.app`)."""
    from monailabel.app import app as api
    from monailabel.endpoints import activelearning as stock_activelearning
    from monailabel.endpoints import datastore as stock_datastore
    from monailabel.endpoints import infer as stock_infer
    from monailabel.endpoints import proxy as stock_proxy
    from monailabel.endpoints import scoring as stock_scoring

    from lib.activelearning.seer import lease_identity
    from lib.datastore import SeerDICOMwebDatastore

    router = APIRouter()
    prefix = settings.MONAI_LABEL_API_STR


    @router.post(prefix + "/activelearning/seer/release", summary="Release a study leased by strategy seer")
    @answered
    def release(image: str, client_id: str | None = None,
                user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        client_id = checked(checked_client_id, client_id)
        holder, admin = lease_identity(user.username, user.roles, client_id)
        outcome = app.active_learning.release(image, holder, admin=admin)
        if outcome == Release.RELEASED:
            return {"id": image, "released": True, "message": "Lease ended."}
        if outcome == Release.NEEDS_CLIENT_ID:
            raise HTTPException(422, f"The lease on '{image}' was taken with a client_id: pass the same client_id "
                                f"parameter to release it (.../release?image={image}&client_id=...).")
        if outcome == Release.NOT_HOLDER:
            raise HTTPException(403, f"The lease on '{image}' is held by another client; only its holder (the user "
                                "and client_id that took it) or an admin can release it.")
        if outcome == Release.NO_STUDY and image not in app.datastore().list_images():
            raise HTTPException(404, f"No study with id '{image[:80]}' in the datastore (GET /datastore/?output=all "
                                "lists them).")
        return {"id": image, "released": False, "message": f"'{image}' holds no lease."}

    @router.post(prefix + "/activelearning/{strategy}", summary="Next study to label")
    @answered
    def next_sample(strategy: str, params: dict | None = None,
                    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        available = list(app._strategies)
        if strategy not in available:
            raise HTTPException(404, f"No active-learning strategy '{strategy}'; this server offers: "
                                f"{', '.join(available)}.")
        params = params or {}
        if strategy != "seer":
            return stock_activelearning.sample(strategy, params, user.username)
        client_id = checked(checked_client_id, params.get("client_id"))
        holder, _ = lease_identity(user.username, user.roles, client_id)
        reply = app.active_learning.next_study(holder, client_id)
        if reply.get("id"):
            datastore = app.datastore()
            reply = {**datastore.get_image_info(reply["id"]), **reply, "path": datastore.get_image_uri(reply["id"])}
        return reply

    @router.post(prefix + "/scoring/{method}", summary="Run a scoring method")
    @answered
    def run_scoring(method: str, params: dict | None = None, run_sync: bool | None = False,
                    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
        available = list(app._scoring_methods)
        if method not in available:
            raise HTTPException(404, f"No scoring method '{method}'; this server offers: "
                                f"{', '.join(available) or 'none'}.")
        if method != "seer":
            return stock_scoring.run_method(method, params, run_sync)
        if run_sync:
            return app._scoring_methods["seer"]({}, app.datastore())
        app.active_learning.trigger("POST /scoring/seer")
        return {"method": "seer", "started": True, "status": app.active_learning.status()}

    @router.get(prefix + "/seer/trace/{image:path}", summary="SEER's reasoning on a study: the newest traces")
    @answered
    def study_traces(image: str, limit: int = 10, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        datastore = app.datastore()
        if image not in datastore.list_images():
            raise HTTPException(404, f"No study with id '{image}' in the datastore (GET /datastore/?output=all "
                                "lists them).")
        fields = ("id", "ts", "request", "answer", "evidence", "rationale", "format_valid", "target", "refused",
                  "skill_ids", "reasoner", "backbone")
        rows, count = app.trace_rows(image, max(1, min(limit, 100)))  # archives of the rotated log included
        return {"image": image, "count": count, "traces": [{k: r.get(k) for k in fields} for r in rows]}

    concurrency = app.seer_settings.infer_concurrency
    infer_slots = asyncio.Semaphore(concurrency) if concurrency else None

    def parsed_params(params: str) -> dict:
        try:
            value = json.loads(params or "{}")
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"params is not valid JSON ({exc.msg} at character {exc.pos}).") from None
        if not isinstance(value, dict):
            raise HTTPException(422, "params must be a JSON object, e.g. {\"prompt\": \"left kidney\"}.")
        return value

    @router.post(prefix + "/infer/{model}", summary="Run inference (off the event loop; output=dicom_seg: a SEG "
                 "coded from the target)")
    async def run_inference(background_tasks: BackgroundTasks, model: str, image: str = "", session_id: str = "",
                            params: str = Form("{}"), file: UploadFile = File(None), label: UploadFile = File(None),
                            output: ResultType | None = None,
                            user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        parsed_params(params)
        if image and not session_id and file is None:  # a client's id (a session's or an upload's path is ours)
            await run_in_threadpool(app.check_study_id, image)
        work = functools.partial(infer, background_tasks, model, image, session_id, params, file, label, output)
        if infer_slots is None:  # infer_concurrency 0: inline on the event loop, as stock MONAI Label
            return work()
        async with infer_slots:  # waiting requests hold no thread
            return await run_in_threadpool(work)

    def infer(background_tasks, model, image, session_id, params, file, label, output):
        if output != ResultType.dicom_seg:
            return stock_infer.run_inference(background_tasks, model, image, session_id, params, file, label, output)
        datastore = app.datastore()
        if not isinstance(datastore, SeerDICOMwebDatastore):
            raise HTTPException(422, "output=dicom_seg needs DICOMweb studies (serve --studies http://host/dicom-web): "
                                "a DICOM SEG is written over the study's DICOM series. Ask for output=image here.")
        if not image:
            raise HTTPException(422, "output=dicom_seg needs ?image=<SeriesInstanceUID>.")
        request = {**app.info().get("config", {}).get("infer", {}), **parsed_params(params)}
        result = app.infer({**request, "model": model, "image": image})
        result_file = result.get("file")
        if result_file:
            background_tasks.add_task(remove_file, result_file)
        reply = result.get("params") or {}
        target = reply["target"]
        out = os.path.join(tempfile.mkdtemp(prefix="seer-seg-"), "seg.dcm")
        try:
            written = write_seg(result_file, datastore.series_dir(image), out, {int(target["id"]): target["name"]},
                                series_description=f"SEER: {target['name']}"[:64],
                                content_description=str(request.get("prompt") or target["name"])[:64])
        except SeerError as exc:
            raise HTTPException(exc.status, exc.message) from None
        background_tasks.add_task(remove_file, os.path.dirname(out))
        headers = {"X-SEER-Target": target["name"], "X-SEER-Series": written["series_uid"],
                   "X-SEER-Trace-Id": str(reply.get("trace_id") or "")}
        return FileResponse(out, media_type="application/dicom", filename="seg.dcm", headers=headers)

    @router.get(prefix + "/datastore/image", summary="Download a study's image (a study id, never a path)")
    def download_image(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        app.check_study_id(image)
        return stock_datastore.download_image(image)

    @router.get(prefix + "/datastore/label", summary="Download a study's label (a study id, never a path)")
    def download_label(label: str, tag: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        app.check_study_id(label)
        if not LABEL_TAG.fullmatch(tag):
            raise HTTPException(422, f"tag '{tag[:40]}' is not a label tag: 'final' or a draft name of letters, digits, "
                                "'-' and '_'.")
        path = app.datastore().get_label_uri(label, tag)
        if not (path and os.path.isfile(path)):
            raise HTTPException(404, f"Study '{label}' has no label tagged '{tag}' (GET /datastore/?output=all lists "
                                "each study's labels).")
        return FileResponse(path, media_type="application/octet-stream", filename=os.path.basename(path))

    @router.put(prefix + "/datastore/label", summary="Save a label (checked first; off the event loop)")
    async def save_label(image: str, params: str = Form("{}"), tag: str = DefaultLabelTag.FINAL.value,
                         label: UploadFile = File(...),
                         user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
        save_params = parsed_params(params)
        client_id = checked(checked_client_id, save_params.get("client_id"))
        annotator, _ = lease_identity(user.username, user.roles, client_id)
        return await run_in_threadpool(save_label_now, image, save_params, tag or DefaultLabelTag.FINAL.value, label,
                                       annotator)

    def save_label_now(image: str, params: dict, tag: str, label: UploadFile, annotator: str) -> dict:
        """Check the upload (format, size, grid, values, names: seer.imaging.label_file, seer.loop.saved_labels),
        then store it with the stock datastore; anything refused leaves the study as it was."""
        datastore = app.datastore()
        if image not in datastore.list_images():
            raise HTTPException(404, f"No study with id '{image[:80]}' in the datastore: a label needs its study (GET "
                                "/datastore/?output=all lists them).")
        if not LABEL_TAG.fullmatch(tag):
            raise HTTPException(422, f"tag '{tag[:40]}' is not a label tag: use 'final' or a draft name of letters, "
                                "digits, '-' and '_' (at most 64).")
        folder = tempfile.mkdtemp(prefix="seer-label-")
        try:
            try:
                suffix = label_suffix(label.filename)
                image_path = datastore.get_image_uri(image)
                upload = os.path.join(folder, "label" + suffix)
                _copy_bounded(label.file, upload, upload_limit_bytes(image_path))
                checked = check_label_file(upload, image_path)
                named = name_label_values(checked.values, label_names_from_info(params),
                                         app.pipeline.backbone.label_table(),
                                         require_all=tag == DefaultLabelTag.FINAL.value)
            except SeerError as exc:
                raise HTTPException(exc.status, exc.message) from None
            if named.names:
                params["label_names"] = named.as_label_names()
            if named.from_table:
                params["named_by_server"] = list(named.from_table)
            params["seer_provenance"] = app.label_provenance(
                image, annotator, {value: name for name, value in named.as_label_names().items()})
            with contextlib.ExitStack() as turn:
                try:
                    app.check_state_db()
                    # no decision or other save on this study runs between the check and the recorded read
                    turn.enter_context(app.reads.study_lock(image))
                    took_label = app.desk.takes_label(image, annotator, tag)
                except StateUnavailable as exc:
                    raise HTTPException(503, f"The label was not saved: {exc.message}") from None
                # a final read kept beside another annotator's approved label leaves the datastore's label as it is
                label_id = datastore.save_label(image, checked.path, tag, params) if took_label else image
                try:
                    read = app.record_read(image, annotator, tag, checked.path, params, took_label)
                except StateUnavailable as exc:  # the label is stored; its read is recorded by its next save
                    logger.warning("the read of %s on %s is not recorded: %s", annotator, image, exc.message)
                    read = {"state": "unrecorded"}
            if tag == DefaultLabelTag.FINAL.value and "kept" in read:
                read["agreement"] = app.read_agreement(image, annotator, checked.path, params, read)
        finally:
            remove_file(folder)
        final = tag == DefaultLabelTag.FINAL.value
        reply = app.on_save_label(image, label_id, annotator=annotator if final else None, took_label=took_label)
        extra = {k: read[k] for k in ("agreement", "note") if k in read}
        return {**(reply or {}), "image": image, "label": label_id, "label_names": named.as_label_names(),
                "named_by_server": list(named.from_table), "annotator": annotator, "review": read["state"], **extra}

    # annotators edit label info as in stock MONAI Label; reviewers (the Slicer Reviewer module) and admins too
    INFO_ROLES = [settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR, settings.MONAI_LABEL_AUTH_ROLE_REVIEWER,
                  settings.MONAI_LABEL_AUTH_ROLE_ADMIN]

    def label_info_now(label: str, tag: str, text: str, user: User) -> dict:
        """Stock label-info update, then the Slicer Reviewer module's `segmentationMeta` status on a final label as a
        review decision (the reviewer role when auth is on)."""
        info = parsed_params(text)
        if label not in app.datastore().list_images():
            raise HTTPException(404, f"No study with id '{label[:80]}' in the datastore (GET /datastore/?output=all "
                                "lists them).")
        if not LABEL_TAG.fullmatch(tag) or not app.datastore().get_label_uri(label, tag):
            raise HTTPException(404, f"'{label[:80]}' has no label tagged '{tag[:40]}'.")
        meta = info.get("segmentationMeta")
        decides = tag == DefaultLabelTag.FINAL.value and isinstance(meta, dict) and str(
            meta.get("status") or "").strip().lower() in ("approved", "flagged")
        if decides and settings.MONAI_LABEL_AUTH_ENABLE and \
                settings.MONAI_LABEL_AUTH_ROLE_REVIEWER not in (user.roles or ()) and \
                settings.MONAI_LABEL_AUTH_ROLE_ADMIN not in (user.roles or ()):
            raise HTTPException(403, f"Marking a label approved or flagged needs the role "
                                f"{settings.MONAI_LABEL_AUTH_ROLE_REVIEWER}.")
        reviewer, _ = lease_identity(user.username, user.roles)
        decision = app.review_from_label_info(label, tag, info, reviewer) if decides else None
        holder = app.reads.holder(label) if decision is not None else None
        if holder is not None and holder["annotator"] != decision["annotator"]:
            # the rejection handed the label to another read: the module's record is not that read's
            info = {k: v for k, v in info.items() if k != "segmentationMeta"}
            if not info:
                return {"review": decision["state"], "label_holds": holder["annotator"]}
        reply = stock_datastore.update_label_info(label, tag, json.dumps(info), user.username)
        return {**(reply or {}), "review": decision["state"] if decision else None}

    @router.put(prefix + "/datastore/label/info", summary="Update a label's info (the Slicer Reviewer's "
                "segmentationMeta status approves or rejects)")
    @answered
    def put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(AnyRole(INFO_ROLES))):
        return label_info_now(label, tag, info, user)

    @router.put(prefix + "/datastore/updatelabelinfo", include_in_schema=False)
    @answered
    def update_label_info(label: str, tag: str, params: str = Form("{}"),
                          user: User = Depends(AnyRole(INFO_ROLES))):
        return label_info_now(label, tag, params, user)

    @router.get(prefix + "/seer/review/queue", summary="Final labels waiting for a reviewer, oldest first")
    @answered
    def review_queue(limit: int = 100, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        waiting = app.reads.queue(max(1, min(int(limit), 1000)), app.seer_settings.agreement_min_dice)
        log = app.pipeline.trace_log
        for read in waiting:
            read["traces"] = [{k: t.get(k) for k in ("id", "request", "target", "refused")}
                              for t in (log.history(read["study"], 3) if log is not None else [])]
        return {"review": app.seer_settings.review, "waiting": waiting}

    @router.get(prefix + "/seer/review/{image:path}", summary="A study's reads: states, provenance, agreement")
    @answered
    def study_review(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        if image not in app.datastore().list_images():
            raise HTTPException(404, f"No study with id '{image[:80]}' in the datastore (GET /datastore/?output=all "
                                "lists them).")
        return app.desk.study_review(image)

    @router.post(prefix + "/seer/review/{image:path}", summary="Approve or reject an annotator's final label")
    @answered
    def review_label(image: str, body: dict, user: User = Depends(AnyRole([settings.MONAI_LABEL_AUTH_ROLE_REVIEWER,
                                                                          settings.MONAI_LABEL_AUTH_ROLE_ADMIN]))):
        """body: {"annotator": the read's annotator (as a save's reply names it), "decision": "approve" | "reject",
        "comment": why (a rejection needs one), "client_id": the reviewer's own client (optional)}."""
        if image not in app.datastore().list_images():
            raise HTTPException(404, f"No study with id '{image[:80]}' in the datastore (GET /datastore/?output=all "
                                "lists them).")
        annotator = body.get("annotator")
        if not isinstance(annotator, str) or not annotator:
            raise HTTPException(422, "Name the label to review: \"annotator\" as the save's reply gave it (GET "
                                "/seer/review/queue lists them).")
        reviewer, _ = lease_identity(user.username, user.roles, checked(checked_client_id, body.get("client_id")))
        return app.review(image, annotator, body.get("decision"), reviewer, body.get("comment") or "")

    forwarded = ("accept", "range", "if-none-match", "if-modified-since", "content-type")
    pacs_session = requests.Session()  # kept-alive connections to the PACS, shared by the proxy's threads
    for scheme in ("http://", "https://"):
        pacs_session.mount(scheme, requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32))

    def pacs_url(op: str, path: str, method: str) -> str:
        """The PACS URL of a checked DICOMweb resource; 400 / 405 with a sentence for anything else (never sent)."""
        studies = settings.MONAI_LABEL_STUDIES.rstrip("/")
        if not studies.startswith(("http://", "https://")):
            raise HTTPException(404, "This server's studies are a local folder: there is no PACS to proxy "
                                "(start it with --studies http://host/dicom-web).")
        try:
            resource = check_proxy_path(path, method)
        except SeerError as exc:
            raise HTTPException(exc.status, exc.message) from None
        prefixes = {"wado": settings.MONAI_LABEL_WADO_PREFIX, "qido": settings.MONAI_LABEL_QIDO_PREFIX,
                    "stow": settings.MONAI_LABEL_STOW_PREFIX}
        prefix = prefixes.get(op, "")
        if resource.path.endswith("metadata") and op == "qido":  # some OHIF versions ask QIDO for metadata
            prefix = settings.MONAI_LABEL_WADO_PREFIX
        if method == "POST":  # STOW-RS, whichever root the viewer posts to (OHIF posts to its WADO root)
            prefix = settings.MONAI_LABEL_STOW_PREFIX
        prefix = (prefix or "").strip("/")
        return f"{studies}/{prefix + '/' if prefix else ''}{resource.path}"

    def proxy(request: Request, op: str, path: str, body: bytes | None) -> Response:
        url = pacs_url(op, path, request.method)
        studies = settings.MONAI_LABEL_STUDIES.rstrip("/")
        auth = ((settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
                if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD else None)
        headers = {k: v for k, v in request.headers.items() if k.lower() in forwarded}
        try:  # no redirects: the credentials go to this DICOMweb URL and nowhere else
            reply = pacs_session.request(request.method, url, params=list(request.query_params.multi_items()),
                                     headers=headers, data=body, auth=auth, allow_redirects=False,
                                     timeout=settings.MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HTTPException(503, f"The PACS at {studies} cannot be reached ({type(exc).__name__}).") from None
        if reply.is_redirect:
            raise HTTPException(502, f"The PACS at {studies} answered {reply.status_code} (a redirect), which the "
                                "proxy does not follow: set --studies to the PACS's DICOMweb root itself.")
        kept = {k: v for k, v in reply.headers.items()
                if k.lower() in ("content-type", "etag", "last-modified", "cache-control", "content-location")}
        return Response(content=reply.content, status_code=reply.status_code, headers=kept)

    def proxy_routes(op: str, google: bool):
        async def stock(request: Request, path: str):  # Google Healthcare: the stock proxy (its tokens), checked
            pacs_url(op, path, request.method)
            return await stock_proxy.proxy_dicom(request, op, path)

        def get_route(request: Request, path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
            return proxy(request, op, path, None)  # a plain def: FastAPI runs it on its thread pool

        async def google_get_route(request: Request, path: str,
                                   user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
            return await stock(request, path)

        async def post_route(request: Request, path: str,
                             user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
            pacs_url(op, path, "POST")  # checked before the body is read
            if google:
                return await stock(request, path)
            body = await request.body()
            return await run_in_threadpool(proxy, request, op, path, body)

        return (google_get_route if google else get_route), post_route

    def refuse_method(request: Request):
        raise HTTPException(405, f"The proxy answers GET and STOW-RS POST only, not {request.method}.")

    google = "googleapis.com" in settings.MONAI_LABEL_STUDIES
    for op in ("wado", "qido", "stow", ""):
        get_route, post_route = proxy_routes(op, google)
        path = f"/proxy/dicom/{op + '/' if op else ''}{{path:path}}"
        router.add_api_route(path, get_route, methods=["GET"], include_in_schema=False)
        router.add_api_route(path, post_route, methods=["POST"], include_in_schema=False)
        for method in ("PUT", "DELETE", "PATCH"):  # never forwarded: 405 with a sentence, not the stock proxy
            router.add_api_route(path, refuse_method, methods=[method], include_in_schema=False)

    api.router.routes[0:0] = router.routes
    logger.info("SEER Label routes installed: %s", ", ".join(r.path for r in router.routes))
