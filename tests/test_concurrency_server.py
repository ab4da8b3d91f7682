"""A whole team on one server: inferences run off the event loop (`infer_concurrency`), so /info, next-sample and
saves answer while a cold registration runs, cold requests on two studies run at the same time, and the same
request twice at once registers its atlas once. Real server, real CT; no timing thresholds: the tests check the
order of events (what answered before what finished, which intervals overlap)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import SHARED_DATA, missing_fixture, running_server

pytestmark = pytest.mark.server


@pytest.fixture
def team_studies(tmp_path, sample_data):
    """The pelvis CT, MNI152 and Colin27 as studies; the small abdominal CT (another crop of the same scan) as the
    CT atlas beside the sample brain atlases."""
    source = SHARED_DATA / "ct-abdomen-small"
    if not (source / "image.nii.gz").exists():
        missing_fixture(f"real volumes not available: {source} is absent")
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(SHARED_DATA / "ct-abdomen-pelvis" / "image.nii.gz", studies / "ct_pelvis.nii.gz")
    shutil.copy(sample_data / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    shutil.copy(sample_data / "colin27_t1.nii.gz", studies / "colin27_t1.nii.gz")
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-small").symlink_to(source)
    return studies, atlases


def _infer(url: str, image: str, prompt: str) -> requests.Response:
    return requests.post(f"{url}/infer/seer", params={"image": image, "output": "json"},
                         data={"params": json.dumps({"prompt": prompt})}, timeout=600)


def _in_background(call, *args) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        box["started"] = time.time()
        box["reply"] = call(*args)
        box["finished"] = time.time()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _traces(studies: Path) -> list[dict]:
    path = studies / ".seer" / "traces.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_quick_requests_answer_while_two_identical_cold_requests_register_once(team_studies, tmp_path):
    """Two annotators ask the same cold request at once: /info, next-sample and /datastore answer while both run,
    and the (study, atlas) pair is registered once (the second waits for the first's registration)."""
    studies, atlases = team_studies
    log = tmp_path / "server.log"
    with running_server(studies, log, {"atlases": atlases, "infer_concurrency": 2}) as url:
        jobs = [_in_background(_infer, url, "ct_pelvis", "liver") for _ in range(2)]
        while not log.read_text().count("[ct_pelvis]"):  # an inference has begun
            assert all(thread.is_alive() for thread, _ in jobs), jobs
            time.sleep(0.05)
        answered = []
        for path, method in (("/info/", "get"), ("/activelearning/seer", "post"), ("/datastore/?output=all", "get")):
            reply = requests.request(method, f"{url}{path}", json={"client_id": "b"} if method == "post" else None,
                                     timeout=60)
            assert reply.status_code == 200, (path, reply.text)
            answered.append((path, any(thread.is_alive() for thread, _ in jobs)))
        for thread, _ in jobs:
            thread.join()
        assert all(box["reply"].status_code == 200 for _, box in jobs), [box["reply"].text for _, box in jobs]
    assert all(running for _, running in answered), answered  # each came back while inference was running
    registered = [line for line in log.read_text().splitlines()
                  if "[ct_pelvis]" in line and "registered atlas" in line and "ct-abdomen-small" in line]
    assert len(registered) == 1, registered
    rows = [r for r in _traces(studies) if r.get("type", "trace") == "trace"]
    assert len(rows) == 2 and {r["target"]["name"] for r in rows} == {"liver"}


def test_cold_requests_on_two_studies_run_at_the_same_time(team_studies, tmp_path):
    studies, atlases = team_studies
    with running_server(studies, tmp_path / "server.log", {"atlases": atlases, "infer_concurrency": 2}) as url:
        jobs = [_in_background(_infer, url, "mni152_t1", "left hippocampus"),
                _in_background(_infer, url, "colin27_t1", "brain")]
        for thread, _ in jobs:
            thread.join()
        for _, box in jobs:
            assert box["reply"].status_code == 200, box["reply"].text
    rows = {r["study"]: r for r in _traces(studies) if r.get("type", "trace") == "trace"}
    spans = {s: (r["ts"] - r["latencies"]["total_s"], r["ts"]) for s, r in rows.items()}
    (a_start, a_end), (b_start, b_end) = spans["mni152_t1"], spans["colin27_t1"]
    assert a_start < b_end and b_start < a_end, spans  # the two inferences overlapped in time


def test_inline_mode_serves_one_request_at_a_time(team_studies, tmp_path):
    """infer_concurrency 0 keeps MONAI Label's stock behaviour: /info waits for the running inference."""
    studies, atlases = team_studies
    with running_server(studies, tmp_path / "server.log", {"atlases": atlases, "infer_concurrency": 0}) as url:
        thread, box = _in_background(_infer, url, "mni152_t1", "left hippocampus")
        while not (tmp_path / "server.log").read_text().count("[mni152_t1]"):
            assert thread.is_alive(), box
            time.sleep(0.05)
        assert requests.get(f"{url}/info/", timeout=300).status_code == 200
        info_back = time.time()
        thread.join()
        assert box["reply"].status_code == 200
    assert info_back >= box["finished"] - 0.5  # /info came back only when the inference was done


def test_bad_params_unknown_study_and_an_unnamed_label(team_studies, tmp_path):
    """Bad params -> 422 and an unknown study -> 404 (not 500); a final label's values without names: one of this
    server's ids takes the table's name (and the reply says so), any other value is refused with 422."""
    studies, atlases = team_studies
    with running_server(studies, tmp_path / "server.log", {"atlases": atlases}) as url:
        reply = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1"}, data={"params": "{oops"},
                              timeout=60)
        assert reply.status_code == 422 and "not valid JSON" in reply.json()["detail"]
        reply = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1"}, data={"params": "[1]"}, timeout=60)
        assert reply.status_code == 422 and "JSON object" in reply.json()["detail"]
        label = tmp_path / "label.nii.gz"
        shutil.copy(studies / "mni152_t1.nii.gz", label)
        with label.open("rb") as f:
            reply = requests.put(f"{url}/datastore/label", params={"image": "nope", "tag": "final"},
                                 files={"label": f}, timeout=60)
        assert reply.status_code == 404 and "No study with id 'nope'" in reply.json()["detail"]
        with label.open("rb") as f:
            reply = requests.put(f"{url}/datastore/label", params={"image": "mni152_t1", "tag": "final"},
                                 files={"label": f}, data={"params": "{oops"}, timeout=60)
        assert reply.status_code == 422
        before = requests.get(f"{url}/info/", timeout=60).json()["models"]["seer"]["labels"]
        import nibabel as nib
        import numpy as np

        image = nib.load(str(studies / "mni152_t1.nii.gz"))
        inside = (np.asarray(image.dataobj) > 50).astype(np.uint16)
        stray = tmp_path / "stray.nii.gz"  # a value that is no id of this server, sent without a name
        nib.save(nib.Nifti1Image(inside * 999, image.affine), str(stray))
        with stray.open("rb") as f:
            reply = requests.put(f"{url}/datastore/label", params={"image": "mni152_t1", "tag": "final"},
                                 files={"label": f}, timeout=120)
        assert reply.status_code == 422 and "999" in reply.json()["detail"], reply.text
        assert "mni152_t1" not in requests.get(f"{url}/datastore/?output=all", timeout=60).json()["objects"].get(
            "mni152_t1", {}).get("labels", {}).get("final", {}).get("info", {}).get("label_names", {})
        name, value = sorted(before.items(), key=lambda kv: kv[1])[0]
        unnamed = tmp_path / "unnamed.nii.gz"  # one of this server's ids, sent without a name: the table names it
        nib.save(nib.Nifti1Image(inside * value, image.affine), str(unnamed))
        with unnamed.open("rb") as f:
            reply = requests.put(f"{url}/datastore/label", params={"image": "mni152_t1", "tag": "final"},
                                 files={"label": f}, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["label_names"] == {name: value} and reply.json()["named_by_server"] == [value]
        info = requests.get(f"{url}/info/", timeout=60).json()
        assert "mni152_t1" not in info["seer"]["labels_not_atlases"]
        assert info["models"]["seer"]["labels"] == before  # no new label: the value kept its own name
