"""Strategy `seer`: the best-scored unlabelled study that no other annotator holds, leased to the asking client
(seer.active_learning.strategy). The app's own route serves POST /activelearning/seer without MONAI Label's whole-file
datastore rewrite; this class serves `app.next_sample` callers too.

Who holds a lease (`lease_identity`): the authenticated user narrowed by the request's `client_id`. With auth off
MONAI Label answers every request as its default user (named `admin`, holding every role), so the user is
`anonymous` and only the `client_id` tells annotators apart; an admin (`MONAI_LABEL_AUTH_ROLE_ADMIN`, auth on only)
may release anyone's lease.
"""

from __future__ import annotations

from monailabel.config import settings
from monailabel.interfaces.tasks.strategy import Strategy

from seer.active_learning.strategy import ActiveLearning
from seer.active_learning.study_state import lease_holder


def lease_identity(username: str | None, roles=(), client_id: str | None = None) -> tuple[str, bool]:
    """(lease holder key, is an admin) of a request's user and its `client_id`."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return lease_holder("anonymous", client_id), False
    return lease_holder(username or "anonymous", client_id), settings.MONAI_LABEL_AUTH_ROLE_ADMIN in (roles or ())


class SeerStrategy(Strategy):
    def __init__(self, active_learning: ActiveLearning):
        super().__init__("SEER-Trace active learning: the unlabelled study whose label teaches the most (phrasing "
                         "disagreement, skill gap, backbone uncertainty; out-of-view studies last), leased per "
                         "annotator")
        self.active_learning = active_learning

    def info(self):
        return {**super().info(), "lease_s": self.active_learning.lease_s}

    def __call__(self, request, datastore):
        client_id = str(request["client_id"]) if request.get("client_id") else None
        holder, _ = lease_identity(request.get("user"), client_id=client_id)
        reply = self.active_learning.next_study(holder, client_id)
        return reply if reply.get("id") else {}
