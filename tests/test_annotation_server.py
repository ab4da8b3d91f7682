"""The annotation loop through the real MONAI Label server on real CT: proposals with several phrasings, a final
label saved through PUT /datastore/label, rewards computed in the background, a skill round closing with
harvested skills, the `skills` / `traces` / `export-traces` commands on the datastore, a restart that loses
nothing, and a label on another grid refused before it is stored (a label copied by hand without names, which
earns no reward, is in test_server.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO, label_map, running_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROUND = 4
PHRASINGS = ["liver", "livr", "splen pls", "lt kidney", "rt kidney"]


@pytest.fixture(scope="module")
def datastore(tmp_path_factory, shared_data):
    """Two copies of the upper-abdomen CT slab as studies; the TotalSegmentator CT is an atlas folder as it stands."""
    root = tmp_path_factory.mktemp("annotation")
    studies = root / "studies"
    studies.mkdir()
    shutil.copy(shared_data / "ct-abdomen-small" / "image.nii.gz", studies / "ct_small.nii.gz")
    shutil.copy(shared_data / "ct-abdomen-small" / "image.nii.gz", studies / "ct_twin.nii.gz")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(shared_data / "ct-abdomen-pelvis")
    conf = {"atlases": str(atlases), "skill_round": ROUND}
    return {"root": root, "studies": studies, "conf": conf}


def infer(url, image, prompt):
    return requests.post(f"{url}/infer/seer", params={"image": image, "output": "json"},
                         data={"params": json.dumps({"prompt": prompt})}, timeout=300)


def save_label(url, image, path, params):
    with open(path, "rb") as fp:
        return requests.put(f"{url}/datastore/label", params={"image": image, "tag": "final"},
                            data={"params": json.dumps(params)}, files={"label": (path.name, fp)}, timeout=60)


def seer_info(url) -> dict:
    return requests.get(f"{url}/info/", timeout=10).json()["seer"]


def wait_for(check, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def cli(*args) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_saved_labels_reward_proposals_evolve_skills_and_survive_a_restart(datastore, shared_data, tmp_path):
    studies = datastore["studies"]
    names = {name: int(value) for value, name in label_map(shared_data / "ct-abdomen-small").items()}
    with running_server(studies, tmp_path / "server1.log", datastore["conf"]) as url:
        info = seer_info(url)
        assert (info["round"], info["skills"], info["rewards"], info["round_size"]) == (0, 14, 0, ROUND)
        targets = {}
        for prompt in PHRASINGS:
            response = infer(url, "ct_small", prompt)
            assert response.status_code == 200, response.text
            targets[prompt] = response.json()["target"]["name"]
        assert targets == {"liver": "liver", "livr": "liver", "splen pls": "spleen", "lt kidney": "kidney_left",
                           "rt kidney": "kidney_right"}
        assert infer(url, "ct_small", "left hippocampus").status_code == 422  # a refusal: no proposal, no reward
        started = time.perf_counter()
        saved = save_label(url, "ct_small", shared_data / "ct-abdomen-small" / "labels.nii.gz", {"label_names": names})
        assert saved.status_code == 200 and time.perf_counter() - started < 30
        info = wait_for(lambda: (i := seer_info(url))["rewards"] == len(PHRASINGS) and i, what="5 rewards")
        assert info["round"] == 1  # 5 rewards: one round of 4 closed, one reward waits for the next
        assert info["skills"] > 14

    traces = cli("traces", "--studies", str(studies), "--json")
    assert traces["round"] == 1 and traces["rewards"] == len(PHRASINGS)
    rows = {r["request"]: r for r in traces["traces"]}
    assert rows["left hippocampus"]["reward_status"] == "refused" and rows["left hippocampus"]["dice"] is None
    for prompt in PHRASINGS:
        row = rows[prompt]
        assert row["reward_status"] == "rewarded" and row["dice"] > 0.9, row
        assert row["gain"] == pytest.approx(row["dice"] - row["raw_dice"], abs=1e-5)
    assert rows["liver"]["raw_dice"] == rows["liver"]["dice"]  # the raw request is the label's own name
    assert rows["livr"]["raw_dice"] == 0.0 and rows["lt kidney"]["raw_dice"] == 0.0  # no label name inside

    listed = cli("skills", "list", "--studies", str(studies), "--json")
    assert listed["round"] == 1 and isinstance(listed["round"], int) and listed["rewards"] == len(PHRASINGS)
    harvested = [s for s in listed["skills"] if s["origin"] == "harvested"]
    # round 1 used the first 4 rewards; "liver" has no gain (its raw request is already a label name)
    assert sorted(s["aliases"][0] for s in harvested) == ["livr", "lt kidney", "splen pls"]
    assert all(s["studies"] == ["ct_small"] and s["created_round"] == 1 for s in harvested)
    shown = cli("skills", "show", harvested[0]["skill_id"], "--studies", str(studies), "--json")
    assert shown["provenance"][0]["how"] == "harvested" and shown["provenance"][0]["study"] == "ct_small"
    # utilities: each credited skill's utility is the sum of the gains of the rewards that credited it (all >= 0)
    credited: dict[str, list[float]] = {}
    for row in traces["traces"][:ROUND + 1]:
        if row["credited"] and row["request"] in PHRASINGS[:ROUND]:
            for skill_id in row["credited"]:
                credited.setdefault(skill_id, []).append(row["gain"])
    used = {s["skill_id"]: s for s in listed["skills"] if s["uses"]}
    assert used and set(used) == set(credited)
    for skill_id, gains in credited.items():
        assert used[skill_id]["uses"] == len(gains)
        assert used[skill_id]["utility"] == pytest.approx(sum(gains), abs=1e-4)
    diff = cli("skills", "diff", "0", "1", "--studies", str(studies), "--json")
    assert len(diff["added"]) == 3 and {c["skill_id"] for c in diff["changed"]} == set(credited)

    exported = cli("export-traces", "--studies", str(studies), "--output", str(tmp_path / "export"))
    assert exported["rows"] == len(PHRASINGS) and exported["studies"] == 1
    first = json.loads((tmp_path / "export" / "seer_traces.jsonl").read_text().splitlines()[0])
    assert first["case_id"] == "ct_small" and first["label_name"] == "liver" and first["label_id"] == 5
    assert first["trace"].startswith("<evidence>") and first["trace"].endswith("</answer>")
    assert all((tmp_path / "export" / p).is_file() for p in first["slices"]) and len(first["slices"]) == 8
    exported_rows = [json.loads(line) for line in (tmp_path / "export" / "seer_traces.jsonl").read_text().splitlines()]
    assert any(r["skill_ids"] for r in exported_rows)  # each retrieved skill is written with the text the model read
    assert all([s["skill_id"] for s in r["skills"]] == r["skill_ids"] and all(s["content"] for s in r["skills"])
               for r in exported_rows)
    from seer.training.finetune import read_examples  # the export is finetune's input as it is

    examples, report = read_examples(tmp_path / "export", 0.5)
    assert report["used"] == len(PHRASINGS) and [len(e.skills) for e in examples] == [
        len(r["skill_ids"]) for r in exported_rows]

    log_rows = (studies / ".seer" / "traces.jsonl").read_text().splitlines()
    with running_server(studies, tmp_path / "server2.log", datastore["conf"]) as url:
        info = seer_info(url)
        assert (info["round"], info["rewards"]) == (1, len(PHRASINGS))  # nothing lost, nothing recomputed
        time.sleep(2)  # the start-up scan has run
        assert (studies / ".seer" / "traces.jsonl").read_text().splitlines() == log_rows

        # a label on another grid is refused before it is stored: the proposal waits for a label it can be scored on
        assert infer(url, "ct_twin", "liver").status_code == 200
        wrong_grid = save_label(url, "ct_twin", shared_data / "ct-abdomen-pelvis" / "labels.nii.gz",
                                {"label_names": names})
        assert wrong_grid.status_code == 422 and "study's grid" in wrong_grid.json()["detail"]

        def status():
            row = cli("traces", "--studies", str(studies), "--study", "ct_twin", "--json")["traces"][0]
            return row["reward_status"] if row["reward_status"] != "pending" else None

        assert status() is None and not (studies / "labels" / "final" / "ct_twin.nii.gz").exists()
        slicer_style = [{"name": name, "idx": value} for name, value in names.items()]
        assert save_label(url, "ct_twin", shared_data / "ct-abdomen-small" / "labels.nii.gz",
                          {"label_info": slicer_style}).status_code == 200
        wait_for(lambda: status() == "rewarded", what="the Slicer-style label rewarded")
        assert seer_info(url)["rewards"] == len(PHRASINGS) + 1
