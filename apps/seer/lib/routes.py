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
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

logger = logging.getLogger(__name__)


def install(app) -> None:
    """Put the routes in front of the stock ones on MONAI Label's FastAPI app (`monailabel.app.app`)."""
    from monailabel.app import app as api
    from monailabel.endpoints import activelearning as stock_activelearning
    from monailabel.endpoints import scoring as stock_scoring

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
        rows = [r for r in app.trace_rows() if r.get("type", "trace") == "trace" and r.get("study") == image]
        newest = [{k: r.get(k) for k in fields} for r in reversed(rows[-max(1, min(limit, 100)):])]
        return {"image": image, "count": len(rows), "traces": newest}

    api.router.routes[0:0] = router.routes
    logger.info("SEER Label routes installed: %s", ", ".join(r.path for r in router.routes))
