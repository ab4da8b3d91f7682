"""Strategy `seer`: the best-scored unlabelled study that no other annotator holds, leased to the asking client
(seer.active_learning.strategy). The app's own route serves POST /activelearning/seer without MONAI Label's whole-file
datastore rewrite; this class serves `app.next_sample` callers too."""

from __future__ import annotations

from monailabel.interfaces.tasks.strategy import Strategy

from seer.active_learning.strategy import ActiveLearning


class SeerStrategy(Strategy):
    def __init__(self, active_learning: ActiveLearning):
        super().__init__("SEER-Trace active learning: the unlabelled study whose label teaches the most (phrasing "
                         "disagreement, skill gap, backbone uncertainty; out-of-view studies last), leased per "
                         "annotator")
        self.active_learning = active_learning

    def info(self):
        return {**super().info(), "lease_s": self.active_learning.lease_s}

    def __call__(self, request, datastore):
        client = str(request.get("client_id") or request.get("user") or "anonymous")
        reply = self.active_learning.next_study(client)
        return reply if reply.get("id") else {}
