"""SEER-Trace active learning through the real MONAI Label server: scoring `seer` on real CT (crops of the pelvis
CT with the campaign's targets in view, half in view, and cropped away), strategy `seer` with leases, the
fallbacks, rescoring that skips unchanged studies, 404s for unknown names, 10,000 tiny studies, and two servers
sharing one datastore and one PostgreSQL database."""

from __future__ import annotations

import json
import shutil
import threading

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import label_map, running_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

CAMPAIGN = "left hip bone; right hip bone; sacrum"


def crop(image: nib.Nifti1Image, target, x=(0, None), z=(0, None)) -> None:
    data = np.asanyarray(image.dataobj)
    x1 = x[1] or data.shape[0]
    z1 = z[1] or data.shape[2]
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ [x[0], 0, z[0]] + image.affine[:3, 3]
    nib.save(nib.Nifti1Image(data[x[0]:x1, :, z[0]:z1], affine), str(target))


@pytest.fixture(scope="module")
def pelvis_datastore(tmp_path_factory, shared_data):
    """Four unlabelled studies cut from the pelvis CT (hips at z 0-60, left hip x 12-58, right hip x 58-105, sacrum
    x 40-80) and the abdominal slab; the whole pelvis CT is the one atlas."""
    root = tmp_path_factory.mktemp("al")
    studies = root / "studies"
    studies.mkdir()
    image = nib.load(str(shared_data / "ct-abdomen-pelvis" / "image.nii.gz"))
    crop(image, studies / "pelvis_lower.nii.gz", z=(0, 64))  # every campaign target in view
    crop(image, studies / "pelvis_left_half.nii.gz", x=(0, 61), z=(0, 80))  # right hip out, sacrum cut
    crop(image, studies / "abdomen_upper.nii.gz", z=(72, None))  # no target in view
    shutil.copy(shared_data / "ct-abdomen-small" / "image.nii.gz", studies / "abdomen_small.nii.gz")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "pelvis").symlink_to(shared_data / "ct-abdomen-pelvis")
    return {"root": root, "studies": studies, "atlases": atlases,
            "labels": shared_data / "ct-abdomen-pelvis" / "labels.nii.gz"}


def next_sample(url, client, strategy="seer"):
    reply = requests.post(f"{url}/activelearning/{strategy}", json={"client_id": client}, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def al_status(url) -> dict:
    return requests.get(f"{url}/info/", timeout=30).json()["seer"]["active_learning"]


def test_scoring_ranks_in_view_studies_first_and_leases_hold(pelvis_datastore, tmp_path):
    # affine only: the ranking depends on what lies in the field of view, not on the demons stage's detail
    conf = {"atlases": pelvis_datastore["atlases"], "campaign": CAMPAIGN, "lease_s": 120, "deformable": "false"}
    with running_server(pelvis_datastore["studies"], tmp_path / "server.log", conf) as url:
        info = requests.get(f"{url}/info/", timeout=30).json()
        assert list(info["strategies"]) == ["seer", "random", "first"] and "seer" in info["scoring"]

        summary = requests.post(f"{url}/scoring/seer", params={"run_sync": "true"}, timeout=600).json()
        assert summary["campaign"] == ["left hip bone", "right hip bone", "sacrum"]
        status = al_status(url)
        assert status["database"] == "sqlite" and status["campaign_source"] == "setting 'campaign'"
        assert (status["studies"], status["scored"], status["out_of_view"]) == (4, 4, 2), status

        # the state says what the scores are; the strategy follows them
        first = next_sample(url, "annotator-a")
        assert first["selection"] == "score" and first["client_id"] == "annotator-a"
        assert first["id"] in ("pelvis_lower", "pelvis_left_half") and first["reasons"]["in_view"] is True
        reasons = first["reasons"]
        assert reasons["request"] in ("left hip bone", "right hip bone", "sacrum")
        assert set(reasons["parts"]) == {"disagreement", "skill_gap", "out_of_view", "uncertainty"}
        assert reasons["priority"] == max(r["score"] for r in reasons["requests"] if r["out_of_view"] < 0.5)
        assert first["path"].endswith(f"{first['id']}.nii.gz")
        second = next_sample(url, "annotator-b")
        assert {first["id"], second["id"]} == {"pelvis_lower", "pelvis_left_half"}
        assert first["reasons"]["priority"] >= second["reasons"]["priority"]
        by_request = {r["request"]: r for r in (first if first["id"] == "pelvis_left_half" else second)["reasons"][
            "requests"]}
        assert by_request["right hip bone"]["out_of_view"] > 0.9  # cropped away
        assert by_request["left hip bone"]["out_of_view"] < 0.1
        # the two studies without the campaign's targets come last, flagged
        third, fourth = next_sample(url, "annotator-c"), next_sample(url, "annotator-d")
        assert {third["id"], fourth["id"]} == {"abdomen_upper", "abdomen_small"}
        assert third["reasons"]["in_view"] is False and third["reasons"]["priority"] < 0
        # every study is held: a clear reply, not an error
        held = next_sample(url, "annotator-e")
        assert "id" not in held and "held by other annotators" in held["message"]

        # a release hands the study to the next annotator
        released = requests.post(f"{url}/activelearning/seer/release",
                                 params={"image": first["id"], "client_id": "annotator-a"}, timeout=30).json()
        assert released["released"] is True
        assert next_sample(url, "annotator-e")["id"] == first["id"]

        # rescoring skips unchanged studies
        again = requests.post(f"{url}/scoring/seer", params={"run_sync": "true"}, timeout=600).json()
        assert (again["scored"], again["unchanged"]) == (0, 4)

        # a saved final label takes the study out of the pool and ends its lease; its proposal earns a reward,
        # counted in the state database
        proposal = requests.post(f"{url}/infer/seer", params={"image": "pelvis_lower", "output": "json"},
                                 data={"params": json.dumps({"prompt": "lt hip"})}, timeout=300)
        assert proposal.status_code == 200, proposal.text
        truth = np.asanyarray(nib.load(str(pelvis_datastore["labels"])).dataobj)[:, :, :64]
        hip_left = {name: int(value) for value, name in label_map(pelvis_datastore["labels"].parent).items()}["hip_left"]
        label = (truth == hip_left).astype(np.uint8)
        path = tmp_path / "label.nii.gz"
        nib.save(nib.Nifti1Image(label, nib.load(str(pelvis_datastore["studies"] / "pelvis_lower.nii.gz")).affine),
                 str(path))
        with open(path, "rb") as fp:
            saved = requests.put(f"{url}/datastore/label", params={"image": "pelvis_lower", "tag": "final"},
                                 data={"params": json.dumps({"label_names": {"hip_left": 1}})},
                                 files={"label": ("label.nii.gz", fp)}, timeout=60)
        assert saved.status_code == 200, saved.text
        status = al_status(url)
        assert status["labelled"] == 1 and status["leased"] == 3
        for _ in range(120):  # the reward is computed in the background
            if al_status(url)["rewards"] == 1:
                break
            threading.Event().wait(0.5)
        assert al_status(url)["rewards"] == 1

        # bad names: 404 with the available ones
        reply = requests.post(f"{url}/activelearning/best", json={}, timeout=30)
        assert reply.status_code == 404 and "seer, random, first" in reply.json()["detail"]
        reply = requests.post(f"{url}/scoring/entropy", timeout=30)
        assert reply.status_code == 404 and "offers: seer" in reply.json()["detail"]
        # the stock strategies stay available
        assert next_sample(url, "annotator-f", "first")["id"]


def test_without_a_campaign_it_falls_back_and_says_so(tmp_path, shared_data):
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("one", "two"):
        shutil.copy(shared_data / "ct-spleen" / "image.nii.gz", studies / f"{name}.nii.gz")
    with running_server(studies, tmp_path / "server.log", {"lease_s": 60}) as url:
        reply = next_sample(url, "a")
        assert reply["selection"] == "random" and "No campaign yet" in reply["note"]
        assert reply["lease_s"] == 60
        assert next_sample(url, "b")["id"] != reply["id"]
        assert al_status(url)["campaign"] == []


def test_new_studies_are_found_and_scored_in_the_background(tmp_path, shared_data):
    """A study copied into the folder while the server runs joins the state and is scored by the next scan (every
    `scan_s`: 30 s by default, 2 s here), without any request."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("one", "two"):
        shutil.copy(shared_data / "ct-spleen" / "image.nii.gz", studies / f"{name}.nii.gz")
    conf = {"campaign": "spleen", "al_backbone": "false", "scan_s": 2}
    with running_server(studies, tmp_path / "server.log", conf) as url:
        for _ in range(120):
            if al_status(url)["scored"] == 2:
                break
            threading.Event().wait(0.5)
        assert al_status(url)["scored"] == 2
        shutil.copy(shared_data / "ct-spleen" / "image.nii.gz", studies / "three.nii.gz")
        for _ in range(180):
            status = al_status(url)
            if status["studies"] == 3 and status["scored"] == 3:
                break
            threading.Event().wait(0.5)
        assert (status["studies"], status["scored"]) == (3, 3), status
        assert status["last_run"]["scored"] == 1 and status["last_run"]["unchanged"] == 2


def tiny_studies(folder, count: int) -> None:
    folder.mkdir()
    data = np.zeros((4, 4, 4), np.int16)
    for i in range(count):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"s{i:05d}.nii.gz"))


def ask_concurrently(urls: list[str], clients: int) -> list[dict]:
    replies: list[dict] = [{}] * clients
    barrier = threading.Barrier(clients)

    def ask(n):
        barrier.wait()
        replies[n] = next_sample(urls[n % len(urls)], f"client-{n}")

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def test_ten_thousand_tiny_studies(tmp_path):
    studies = tmp_path / "studies"
    tiny_studies(studies, 10_000)
    with running_server(studies, tmp_path / "server.log", {"lease_s": 600}, timeout_s=600) as url:
        status = al_status(url)
        deadline = 0
        while status["studies"] < 10_000 and deadline < 60:  # the start-up sync runs in the background
            deadline += 1
            threading.Event().wait(1)
            status = al_status(url)
        assert status["studies"] == 10_000
        replies = ask_concurrently([url], 20)
        ids = [r["id"] for r in replies]
        assert len(set(ids)) == 20
        assert al_status(url)["leased"] == 20


def test_two_servers_share_one_postgresql(tmp_path, fresh_postgres):
    """Two app servers on one datastore and one PostgreSQL database: 30 annotators asking at once (alternating
    servers) for 24 studies get 24 different studies; the other 6 are told everything is held."""
    studies = tmp_path / "studies"
    tiny_studies(studies, 24)
    conf = {"state_db": fresh_postgres, "lease_s": 600}
    with running_server(studies, tmp_path / "one.log", conf) as one, \
            running_server(studies, tmp_path / "two.log", conf) as two:
        for url in (one, two):
            status = al_status(url)
            assert status["database"] == "postgresql"
        replies = ask_concurrently([one, two], 30)
        ids = [r["id"] for r in replies if r.get("id")]
        assert len(ids) == 24 and len(set(ids)) == 24
        assert sum(1 for r in replies if "held by other annotators" in r.get("message", "")) == 6


def test_a_lease_belongs_to_its_client(tmp_path):
    """Auth off: the user is `anonymous`, narrowed by `client_id`. Only the client holding a lease ends it; asking
    for the next study gives back the one the client holds (`lease_one_per_client`, on by default)."""
    studies = tmp_path / "studies"
    tiny_studies(studies, 3)
    with running_server(studies, tmp_path / "server.log", {"lease_s": 600}) as url:
        def release(**params):
            return requests.post(f"{url}/activelearning/seer/release", params=params, timeout=30)

        first = next_sample(url, "alice")
        study = first["id"]
        assert (first["client_id"], first["holder"]) == ("alice", "anonymous/alice")
        missing = release(image=study)
        assert missing.status_code == 422 and "client_id" in missing.json()["detail"]
        other = release(image=study, client_id="bob")
        assert other.status_code == 403, other.text
        assert al_status(url)["leased"] == 1  # nothing changed
        assert release(image="no-such-study", client_id="alice").status_code == 404
        ended = release(image=study, client_id="alice")
        assert ended.status_code == 200 and ended.json()["released"] is True
        again = release(image=study, client_id="alice")
        assert again.status_code == 200 and again.json()["released"] is False
        assert al_status(url)["leased"] == 0

        # alice skips: her next study comes with the skipped one given back, in the same hand-out
        skipped = next_sample(url, "alice")
        after = next_sample(url, "alice")
        assert after["given_back"] == [skipped["id"]] and after["id"] != skipped["id"]
        assert al_status(url)["leased"] == 1
        assert next_sample(url, "bob")["id"] not in (after["id"],)
