"""Scoring method `seer` (seer.active_learning.scoring): runs in this process, on the live pipeline and state database.
POST /scoring/seer starts a background pass through the app's own route (MONAI Label's stock route would start
a second app in a subprocess); `app.scoring({"method": "seer"})` runs one pass synchronously."""

from __future__ import annotations

from monailabel.interfaces.tasks.scoring import ScoringMethod

from seer.active_learning.strategy import ActiveLearning


class SeerScoring(ScoringMethod):
    def __init__(self, active_learning: ActiveLearning):
        super().__init__("SEER-Trace scores of unlabelled studies per campaign request (disagreement across "
                         "phrasings, skill gap, out-of-view evidence, backbone uncertainty)")
        self.active_learning = active_learning

    def __call__(self, request, datastore):
        self.active_learning.sync()
        return self.active_learning.run_scoring()
