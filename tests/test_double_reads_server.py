"""Several reads per study on the real server (`--conf reads_per_study 2`, review on), on SQLite and on PostgreSQL:
two annotators' reads side by side with their agreement, the Slicer Reviewer module's approval of the read the
label holds, a rejection that withdraws and hands the label on, a restart in the middle; and a label no save made,
reviewed as the read of "datastore"."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
import requests
from test_annotation_server import cli, infer, save_label, seer_info, wait_for

from conftest import running_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


def shifted_read(label, folder, voxels: int = 2):
    """Another annotator's read of the slab: the liver drawn `voxels` further along the first axis, the rest as in
    `label`."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(label))
    data = np.asarray(image.dataobj).copy()
    liver = data == LIVER
    data[liver] = 0
    data[np.roll(liver, voxels, axis=0) & (data == 0)] = LIVER
    path = folder / "second_read.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.uint8), image.affine), str(path))
    return path


LIVER = 5  # TotalSegmentator's liver


def next_study(url, client):
    return requests.post(f"{url}/activelearning/seer", json={"client_id": client}, timeout=60).json()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_reads_of_one_study_their_agreement_and_only_the_approved_read_teaches(tmp_path, ct_slab_study,
                                                                                   request, database):
    """reads_per_study 2: two annotators read the study, a third is never handed it; agreement per structure is in
    the second save's reply, /info and the queue; a restart in the middle of review loses nothing (PostgreSQL); the Slicer
    Reviewer module approves the read the label holds and it teaches; its rejection withdraws that and hands the
    label to the other read, whose approval writes it back as the study's label."""
    studies, names, label = ct_slab_study["folder"], ct_slab_study["names"], ct_slab_study["label"]
    assert names["liver"] == LIVER
    second = shifted_read(label, tmp_path)
    conf = {**ct_slab_study["conf"], "review": "true", "reads_per_study": "2", "agreement_min_dice": "0.95"}
    if database == "postgresql":
        conf["state_db"] = request.getfixturevalue("fresh_postgres")
    stack = contextlib.ExitStack()
    with stack:
        url = stack.enter_context(running_server(studies, tmp_path / "server.log", conf))
        assert infer(url, "ct_small", "liver").status_code == 200
        assert next_study(url, "alice")["id"] == "ct_small"
        first = save_label(url, "ct_small", label, {"label_names": names, "client_id": "alice"})
        assert first.status_code == 200 and first.json()["agreement"] == [], first.text
        assert "read by you already" in next_study(url, "alice")["message"]  # never twice to one annotator
        assert next_study(url, "bob")["id"] == "ct_small"
        saved = save_label(url, "ct_small", second, {"label_names": names, "client_id": "bob"})
        assert saved.status_code == 200 and saved.json()["review"] == "submitted", saved.text
        (pair,) = saved.json()["agreement"]
        assert pair["with"] == "anonymous/alice" and pair["disagrees"]
        assert 0.5 < pair["structures"]["liver"]["dice"] < 0.95 and pair["structures"]["liver"]["msd_mm"] > 0
        assert pair["structures"]["spleen"]["dice"] == 1.0
        assert "id" not in next_study(url, "carol")  # a third read is never handed out
        time.sleep(2)
        info = seer_info(url)
        assert info["rewards"] == 0 and info["review"]["waiting"] == 2
        assert info["review"]["agreement"]["below_min_dice"] == 1
        assert "review" in info["labels_not_atlases"]["ct_small"]
        if database == "postgresql":
            # a restart in the middle of review (SQLite's is in test_review_server): all is still there
            stack.close()
            url = stack.enter_context(running_server(studies, tmp_path / "server2.log", conf))
        queue = requests.get(f"{url}/seer/review/queue", timeout=30).json()["waiting"]
        assert [(q["annotator"], q["disagrees"]) for q in queue] == [("anonymous/alice", True),
                                                                      ("anonymous/bob", True)]
        shown = requests.get(f"{url}/seer/review/ct_small", timeout=30).json()
        assert shown["label_holds"] == "anonymous/bob" and len(shown["agreement"]) == 1
        (proposed,) = shown["reads"][0]["provenance"]["proposed_by"]
        assert proposed["request"] == "liver" and proposed["skill_round"] == 0 and proposed["backbone"] == "atlas"
        assert proposed["atlases"]  # the atlases the proposal was registered from
        # the Slicer MONAI Label Reviewer module approves the label it shows: bob's, the newest submitted read
        meta = {"segmentationMeta": {"status": "approved", "approvedBy": "Dr. Rev", "level": "hard", "comment": "",
                                     "editTime": 1765000000}}
        approved = requests.put(f"{url}/datastore/updatelabelinfo", params={"label": "ct_small", "tag": "final"},
                                data={"params": json.dumps(meta)}, timeout=60)
        assert approved.status_code == 200 and approved.json()["review"] == "approved", approved.text
        info = wait_for(lambda: (i := seer_info(url))["rewards"] == 1 and i, what="the reward after approval")
        assert "ct_small" not in info["labels_not_atlases"]
        # rejected after it taught: its reward is withdrawn and the label goes to alice's read (still submitted)
        rejected = requests.post(f"{url}/seer/review/ct_small", timeout=60, json={
            "annotator": "anonymous/bob", "decision": "reject", "comment": "liver shifted", "client_id": "rev"})
        assert rejected.status_code == 200 and len(rejected.json()["withdrawn"]) == 1, rejected.text
        info = seer_info(url)
        assert info["rewards_withdrawn"] == 1 and "review" in info["labels_not_atlases"]["ct_small"]
        held = requests.get(f"{url}/seer/review/ct_small", timeout=30).json()
        assert held["label_holds"] == "anonymous/alice" and not held["teaches"]
        alice = requests.post(f"{url}/seer/review/ct_small", timeout=60, json={
            "annotator": "anonymous/alice", "decision": "approve", "client_id": "rev"})
        assert alice.status_code == 200, alice.text
        stored = requests.get(f"{url}/datastore/label", params={"label": "ct_small", "tag": "final"}, timeout=30)
        (tmp_path / "stored.nii.gz").write_bytes(stored.content)
        import nibabel as nib
        import numpy as np

        assert np.array_equal(np.asarray(nib.load(str(tmp_path / "stored.nii.gz")).dataobj),
                              np.asarray(nib.load(str(label)).dataobj))  # alice's read, written back
        info = wait_for(lambda: (i := seer_info(url)) and "ct_small" not in i["labels_not_atlases"] and i,
                        what="the approved read as an atlas")
        assert info["rewards_withdrawn"] == 1 and info["review"]["waiting"] == 0
    args = ["--state-db", conf["state_db"]] if database == "postgresql" else ["--studies", str(studies)]
    listed = cli("review", "list", *args, "--json")["reads"]
    assert sorted((r["annotator"], r["state"]) for r in listed) == [("anonymous/alice", "approved"),
                                                                    ("anonymous/bob", "rejected")]
    assert cli("review", "agreement", *args, "--json")["agreement"] == []  # bob's rejected read is out of it
    shown = cli("review", "show", "ct_small", *args, "--json")
    assert shown["label_holds"] == "anonymous/alice" and shown["reads"][0]["provenance"]["user"] == "anonymous"


def test_a_final_label_copied_in_by_hand_is_reviewed_as_the_datastores_read(tmp_path, ct_slab_study):
    """review on: a final label no save made (copied into labels/final) has no annotator; the Slicer Reviewer
    module's approval adopts it as the read of "datastore" and approves it; the API names it the same way."""
    import shutil

    studies, label = ct_slab_study["folder"], ct_slab_study["label"]
    (studies / "labels" / "final").mkdir(parents=True)
    shutil.copy(label, studies / "labels" / "final" / "ct_small.nii.gz")
    conf = {**ct_slab_study["conf"], "review": "true"}
    with running_server(studies, tmp_path / "server.log", conf) as url:
        meta = {"segmentationMeta": {"status": "approved", "approvedBy": "Dr. Rev", "comment": ""}}
        approved = requests.put(f"{url}/datastore/updatelabelinfo", params={"label": "ct_small", "tag": "final"},
                                data={"params": json.dumps(meta)}, timeout=60)
        assert approved.status_code == 200 and approved.json()["review"] == "approved", approved.text
        shown = requests.get(f"{url}/seer/review/ct_small", timeout=30).json()
        assert shown["label_holds"] == "datastore" and shown["teaches"]
        assert [(r["annotator"], r["state"]) for r in shown["reads"]] == [("datastore", "approved")]
        rejected = requests.post(f"{url}/seer/review/ct_small", timeout=60, json={
            "annotator": "datastore", "decision": "reject", "comment": "not ours"})
        assert rejected.status_code == 200 and rejected.json()["state"] == "rejected", rejected.text
        assert not requests.get(f"{url}/seer/review/ct_small", timeout=30).json()["teaches"]
