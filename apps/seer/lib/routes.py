"""Routes of SEER Label that replace MONAI Label's stock ones for next-sample and scoring, installed in front of
them on the server's FastAPI app (MONAI Label's router extension point; the stock routes stay for everything
else).

- POST /activelearning/{strategy}: unknown strategy -> 404 naming the available ones (stock: 500). `seer` is
  answered from the state database: no whole-datastore JSON rewrite, no `/info` assembly per call; the stock
  strategies keep their stock behaviour.
- POST /activelearning/seer/release?image=ID&client_id=C: end a lease before it expires.
- POST /scoring/{method}: unknown method -> 404; `seer` starts a pass in this process's background worker
  (`run_sync=true` waits for it and returns its summary).
- GET /seer/trace/{image}?limit=10: SEER's newest traces on a study (request, evidence, rationale, answer, target
  or refusal), newest first; for viewers that show no reply text (OHIF).
- POST /infer/{model}: run on the thread pool, at most `infer_concurrency` at once (waiting requests queue on a
  semaphore and hold no thread), so /info, next-sample and saves answer while inferences run; params that are
  not a JSON object -> 422. output=dicom_seg: the DICOM SEG is written from the resolved target (segment label,
  SNOMED CT type and laterality: seer.pacs.dicom_seg), not from a client's `label_info`; other outputs are stock.
- PUT /datastore/label: stock saving on the thread pool; an unknown study -> 404, bad params -> 422.
- GET/POST /proxy/dicom/...: MONAI Label's DICOMweb proxy (OHIF's only way to the PACS), forwarding the viewer's
  Accept header so that the PACS sends frames in a transfer syntax the viewer decodes (JPEG 2000 as stored)
  instead of transcoding, and answering 503 with the URL when the PACS is down. Runs off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import tempfile

import requests
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, Response
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import remove_file
from starlette.concurrency import run_in_threadpool

from seer.errors import SeerError
from seer.pacs.dicom_seg import write_seg

logger = logging.getLogger(__name__)


def install(app) -> None:
    """Put the routes in front of the stock ones on MONAI Label's FastAPI app (`monailabel.app.app`)."""
    from monailabel.app import app as api
    from monailabel.endpoints import activelearning as stock_activelearning
    from monailabel.endpoints import datastore as stock_datastore
    from monailabel.endpoints import infer as stock_infer
    from monailabel.endpoints import scoring as stock_scoring

    from lib.datastore import SeerDICOMwebDatastore

    router = APIRouter()
    prefix = settings.MONAI_LABEL_API_STR

    @router.post(prefix + "/activelearning/seer/release", summary="Release a study leased by strategy seer")
    def release(image: str, client_id: str | None = None,
                user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        released = app.active_learning.release(image, client_id)
        return {"id": image, "released": released,
                "message": "Lease ended." if released else f"'{image}' holds no lease"
                + (f" of client '{client_id}'" if client_id else "") + "."}

    @router.post(prefix + "/activelearning/{strategy}", summary="Next study to label")
    def next_sample(strategy: str, params: dict | None = None,
                    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        available = list(app._strategies)
        if strategy not in available:
            raise HTTPException(404, f"No active-learning strategy '{strategy}'; this server offers: "
                                f"{', '.join(available)}.")
        params = params or {}
        if strategy != "seer":
            return stock_activelearning.sample(strategy, params, user.username)
        client = str(params.get("client_id") or user.username or "anonymous")
        reply = app.active_learning.next_study(client)
        if reply.get("id"):
            datastore = app.datastore()
            reply = {**datastore.get_image_info(reply["id"]), **reply, "path": datastore.get_image_uri(reply["id"])}
        return reply

    @router.post(prefix + "/scoring/{method}", summary="Run a scoring method")
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

    @router.get(prefix + "/seer/trace/{image}", summary="SEER's reasoning on a study: the newest traces")
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

    @router.put(prefix + "/datastore/label", summary="Save a label (off the event loop)")
    async def save_label(background_tasks: BackgroundTasks, image: str, params: str = Form("{}"),
                         tag: str = DefaultLabelTag.FINAL.value, label: UploadFile = File(...),
                         user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
        parsed_params(params)
        return await run_in_threadpool(save_label_now, background_tasks, image, params, tag, label, user.username)

    def save_label_now(background_tasks, image, params, tag, label, username):
        datastore = app.datastore()
        if image not in datastore.list_images():
            raise HTTPException(404, f"No study with id '{image}' in the datastore: a label needs its study (GET "
                                "/datastore/?output=all lists them).")
        return stock_datastore.save_label(background_tasks, image, params, tag, label, username)

    forwarded = ("accept", "range", "if-none-match", "if-modified-since", "content-type")

    def proxy(request: Request, op: str, path: str, body: bytes | None) -> Response:
        studies = settings.MONAI_LABEL_STUDIES.rstrip("/")
        if not studies.startswith(("http://", "https://")):
            raise HTTPException(404, "This server's studies are a local folder: there is no PACS to proxy "
                                "(start it with --studies http://host/dicom-web).")
        prefix = {"wado": settings.MONAI_LABEL_WADO_PREFIX, "qido": settings.MONAI_LABEL_QIDO_PREFIX,
                  "stow": settings.MONAI_LABEL_STOW_PREFIX}.get(op, "")
        if path.endswith("metadata") and op == "qido":  # some OHIF versions ask QIDO for metadata
            prefix = settings.MONAI_LABEL_WADO_PREFIX
        url = f"{studies}/{prefix + '/' if prefix else ''}{path}"
        auth = ((settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
                if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD else None)
        headers = {k: v for k, v in request.headers.items() if k.lower() in forwarded}
        try:
            reply = requests.request(request.method, url, params=list(request.query_params.multi_items()),
                                     headers=headers, data=body, auth=auth,
                                     timeout=settings.MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HTTPException(503, f"The PACS at {studies} cannot be reached ({type(exc).__name__}).") from None
        kept = {k: v for k, v in reply.headers.items()
                if k.lower() in ("content-type", "etag", "last-modified", "cache-control", "content-location")}
        return Response(content=reply.content, status_code=reply.status_code, headers=kept)

    def proxy_routes(op: str):
        def get_route(request: Request, path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
            return proxy(request, op, path, None)  # a plain def: FastAPI runs it on its thread pool

        async def post_route(request: Request, path: str,
                             user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
            body = await request.body()
            return await run_in_threadpool(proxy, request, op, path, body)

        return get_route, post_route

    if "googleapis.com" not in settings.MONAI_LABEL_STUDIES:  # Google Healthcare keeps the stock proxy (tokens)
        for op in ("wado", "qido", "stow", ""):
            get_route, post_route = proxy_routes(op)
            path = f"/proxy/dicom/{op + '/' if op else ''}{{path:path}}"
            router.add_api_route(path, get_route, methods=["GET"], include_in_schema=False)
            router.add_api_route(path, post_route, methods=["POST"], include_in_schema=False)

    api.router.routes[0:0] = router.routes
    logger.info("SEER Label routes installed: %s", ", ".join(r.path for r in router.routes))
