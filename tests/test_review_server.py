"""Review on the real server (`--conf review true`): a final label is submitted and teaches nothing until a reviewer
approves it through POST /seer/review/{image}, also after a restart; bad decisions are one sentence each;
`review list` shows the states."""

from __future__ import annotations

import json
import time

import pytest
import requests
from test_annotation_server import cli, infer, save_label, seer_info, wait_for

from conftest import running_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_a_final_label_teaches_only_once_a_reviewer_approves_it(tmp_path, ct_slab_study):
    studies, names, label = ct_slab_study["folder"], ct_slab_study["names"], ct_slab_study["label"]
    conf = {**ct_slab_study["conf"], "review": "true"}
    with running_server(studies, tmp_path / "server.log", conf) as url:
        def review(body):
            return requests.post(f"{url}/seer/review/ct_small", json=body, timeout=60)

        assert infer(url, "ct_small", "liver").status_code == 200
        saved = save_label(url, "ct_small", label, {"label_names": names, "client_id": "alice"})
        assert saved.status_code == 200, saved.text
        assert (saved.json()["annotator"], saved.json()["review"]) == ("anonymous/alice", "submitted")
        draft = requests.put(f"{url}/datastore/label", params={"image": "ct_small", "tag": "bob-draft"},
                             data={"params": '{"client_id": "bob"}'}, files={"label": label.open("rb")}, timeout=60)
        assert draft.status_code == 200 and draft.json()["review"] == "draft"
        time.sleep(2)
        info = seer_info(url)
        assert info["rewards"] == 0 and info["review"] == {"on": True, "waiting": 1}
        assert "review" in info["labels_not_atlases"]["ct_small"]  # not an atlas yet
        queue = requests.get(f"{url}/seer/review/queue", timeout=30).json()["waiting"]
        assert [(q["study"], q["annotator"]) for q in queue] == [("ct_small", "anonymous/alice")]
        assert queue[0]["traces"][0]["request"] == "liver"

        for body, status, words in [
            ({"annotator": "anonymous/alice", "decision": "maybe"}, 422, "\"approve\" or \"reject\""),
            ({"decision": "approve"}, 422, "Name the label to review"),
            ({"annotator": "anonymous/carol", "decision": "approve"}, 404, "has no label on 'ct_small'"),
            ({"annotator": "anonymous/bob", "decision": "approve"}, 409, "is a draft"),
            ({"annotator": "anonymous/alice", "decision": "reject"}, 422, "needs a comment"),
            ({"annotator": "anonymous/alice", "decision": "approve", "client_id": "alice"}, 403, "their own label"),
        ]:
            reply = review(body)
            assert reply.status_code == status and words in reply.json()["detail"], (body, reply.text)
        assert requests.post(f"{url}/seer/review/elsewhere", json={}, timeout=30).status_code == 404
        assert seer_info(url)["rewards"] == 0
    # a restart in the middle of review loses nothing: the read still waits, and its approval teaches
    with running_server(studies, tmp_path / "server2.log", conf) as url:
        def review(body):
            return requests.post(f"{url}/seer/review/ct_small", json=body, timeout=60)

        queue = requests.get(f"{url}/seer/review/queue", timeout=30).json()["waiting"]
        assert [(q["study"], q["annotator"]) for q in queue] == [("ct_small", "anonymous/alice")]
        assert seer_info(url)["rewards"] == 0
        # a rejection through the API is written into the label info as the Slicer Reviewer module reads it
        rejected = review({"annotator": "anonymous/alice", "decision": "reject", "comment": "liver dome missing",
                           "client_id": "rev"})
        assert rejected.status_code == 200 and rejected.json()["state"] == "rejected", rejected.text
        info = requests.get(f"{url}/datastore/label/info", params={"label": "ct_small", "tag": "final"},
                            timeout=30).json()
        assert info["segmentationMeta"]["status"] == "flagged"
        assert info["segmentationMeta"]["comment"] == "liver dome missing"
        assert info["segmentationMeta"]["approvedBy"] == "anonymous/rev"
        assert seer_info(url)["rewards"] == 0
        resaved = save_label(url, "ct_small", label, {"label_names": names, "client_id": "alice"})
        assert resaved.json()["review"] == "submitted"
        # the Slicer MONAI Label Reviewer module approves exactly as it sends it: form field `params`, `label=`
        meta = {"segmentationMeta": {"status": "approved", "approvedBy": "Dr. Rev", "level": "easy", "comment": "",
                                     "editTime": 1765000000}}
        approved = requests.put(f"{url}/datastore/updatelabelinfo", params={"label": "ct_small", "tag": "final"},
                                data={"params": json.dumps(meta)},
                                headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=60)
        assert approved.status_code == 200 and approved.json()["review"] == "approved", approved.text
        info = wait_for(lambda: (i := seer_info(url))["rewards"] == 1 and i, what="the reward after approval")
        assert info["round"] == 1 and info["review"]["waiting"] == 0
        assert "ct_small" not in info["labels_not_atlases"]
        stored = requests.get(f"{url}/datastore/label/info", params={"label": "ct_small", "tag": "final"},
                              timeout=30).json()
        assert stored["segmentationMeta"]["approvedBy"] == "Dr. Rev"  # the module's own record, as it wrote it
        # a rejection after the approval withdraws what the label taught: its reward, its atlas
        again = review({"annotator": "anonymous/alice", "decision": "reject", "comment": "late", "client_id": "rev"})
        assert again.status_code == 200 and len(again.json()["withdrawn"]) == 1, again.text
        info = seer_info(url)
        assert info["rewards_withdrawn"] == 1 and "review" in info["labels_not_atlases"]["ct_small"]
        nothing = requests.put(f"{url}/datastore/updatelabelinfo", params={"label": "ct_small", "tag": "nope"},
                               data={"params": json.dumps(meta)}, timeout=30)
        assert nothing.status_code == 404
    listed = cli("review", "list", "--studies", str(studies), "--json")["reads"]
    assert [(r["annotator"], r["state"], r["reviewer"]) for r in listed] == [
        ("anonymous/bob", "draft", None), ("anonymous/alice", "rejected", "anonymous/rev")]
    traces = cli("traces", "--studies", str(studies), "--json")["traces"]
    assert [t["reward_status"] for t in traces] == ["withdrawn"]

