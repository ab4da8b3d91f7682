"""The command line contract: JSON output, --batch, segment, sample-data, exit code 2 with a sentence."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO

FIELDS = ["request", "evidence", "rationale", "answer", "label", "label_id", "rejected", "reason", "skill_ids",
          "reasoner", "latency_s"]


def run(*args, check=True):
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_reason_prints_one_json_object_with_the_contract_fields(shared_data):
    proc = run("reason", "rt hip bone pls", "--labels", str(shared_data / "ct-abdomen-pelvis" / "labels.json"),
               "--image", str(shared_data / "ct-abdomen-pelvis" / "image.nii.gz"))
    row = json.loads(proc.stdout)
    assert list(row)[: len(FIELDS)] == FIELDS
    assert row["format_valid"] is True
    assert (row["label"], row["label_id"], row["rejected"]) == ("hip_right", 78, False)
    assert row["answer"] == "Segment the right hip bone." and row["reasoner"] == "offline"


def test_reason_without_labels_gives_no_label():
    row = json.loads(run("reason", "left hippocampus").stdout)
    assert row["label"] is None and row["label_id"] is None and row["rejected"] is False
    assert row["answer"] == "Segment the left hippocampus."


def test_reason_with_an_empty_skill_bank_goes_on_without_skills(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    row = json.loads(run("reason", "left kidney", "--skills", str(tmp_path / "empty.jsonl")).stdout)
    assert row["answer"] == "Segment the left kidney." and row["format_valid"] is True
    assert row["skill_ids"] == [] and row["rejected"] is False


def test_batch_keeps_order_and_reports_bad_lines_as_rejected(tmp_path, shared_data):
    labels = str(shared_data / "brain-colin27" / "labels.json")
    lines = [{"request": "left hippocampus", "labels": labels}, {"request": "", "labels": labels},
             {"request": "R amygdala", "labels": labels}, {"request": "x" * 5000}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = [json.loads(line) for line in run("reason", "--batch", str(batch)).stdout.splitlines()]
    assert [r["label"] for r in rows] == ["Hippocampus_L", None, "Amygdala_R", None]
    assert [r["rejected"] for r in rows] == [False, True, False, True]
    assert "empty" in rows[1]["reason"] and "at most 1,000" in rows[3]["reason"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["reason", ""], "The request is empty"),
        (["reason", "liver", "--labels", "/nonexistent/labels.json"], "does not exist"),
        (["reason", "liver", "--image", "/nonexistent/ct.nii.gz"], "does not exist"),
        (["reason", "liver", "--reasoner", "gpt-9"], "Setting 'reasoner' must be one of"),
        (["reason"], "Give a REQUEST"),
        (["segment", "--image", "/nonexistent.nii.gz", "--prompt", "liver", "--output", "/tmp/x.nii.gz"],
         "does not exist"),
        (["segment", "--image", "x.nii.gz", "--prompt", "liver", "--output", "/tmp/x.png"], "--output must end"),
        (["serve", "--conf", "max_atlases", "many"], "Setting 'max_atlases' must be an integer"),
        (["serve", "--conf", "state_db", "postgresql://seer:secret@127.0.0.1:9/none"],
         "The state database postgresql://seer:***@127.0.0.1:9/none cannot be opened"),
        (["serve", "--conf", "state_db", "mysql://x"], "Setting 'state_db' must be a postgresql://"),
        (["serve", "--conf", "lease_s", "0"], "Setting 'lease_s' must be between"),
        (["serve", "--conf", "backbone_device", "gpu0"],
         "Setting 'backbone_device' must be auto, cpu, cuda or cuda:N, got 'gpu0'"),
        (["reason", "liver", "--device", "tpu"], "Setting 'device' must be auto, cpu, cuda or cuda:N"),
        (["no-such-command-flag", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_a_sentence(args, message):
    proc = run(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_corrupted_image_exits_2(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8bnot really gzip")
    proc = run("reason", "liver", "--image", str(bad), check=False)
    assert proc.returncode == 2 and "not a readable NIfTI" in proc.stderr


@pytest.mark.slow
def test_segment_writes_a_mask_on_the_input_grid(sample_data, colin27, tmp_path):
    out = tmp_path / "hippocampus.nii.gz"
    proc = run("segment", "--image", str(sample_data / "mni152_t1.nii.gz"), "--prompt", "hipocampus lt pls",
               "--output", str(out))
    result = json.loads(proc.stdout)
    assert result["label"] == "Hippocampus_L"
    mask = nib.load(out)
    study = nib.load(sample_data / "mni152_t1.nii.gz")
    assert mask.shape == study.shape
    np.testing.assert_allclose(mask.affine, study.affine)
    values = np.unique(np.asanyarray(mask.dataobj))
    assert values.tolist() == [0, result["label_id"]]
    assert "registering atlas" in proc.stderr or result["atlases"][0]["registration"] != "computed"


def test_segment_refusal_exits_2(sample_data):
    proc = run("segment", "--image", str(sample_data / "mni152_t1.nii.gz"), "--prompt", "rt hip bone",
               "--output", "/tmp/never.nii.gz", check=False)
    assert proc.returncode == 2 and "Out of region" in proc.stderr


@pytest.mark.slow
def test_learning_commands_on_bad_state_exit_2_with_a_sentence(tmp_path):
    """skills / traces / export-traces on a folder the server never ran on, unknown ids and rounds, nothing to
    export: exit 2 and one sentence each."""
    from seer.loop.skill_rounds import SkillRounds

    never = tmp_path / "never"
    never.mkdir()
    served = tmp_path / "served"
    SkillRounds(served / ".seer")  # what the server leaves on start-up: round 0, no trace log yet
    cases = [
        (["skills", "list", "--studies", str(never)], "holds no SEER state (.seer); start the server on it first"),
        (["traces", "--studies", str(tmp_path / "missing")], "does not exist"),
        (["skills", "show", "seer:nope", "--studies", str(served)], "No skill 'seer:nope' in any round"),
        (["skills", "show", "--studies", str(served)], "Give one skill id"),
        (["skills", "diff", "0", "9", "--studies", str(served)], "There is no skill round 9"),
        (["skills", "diff", "0", "x", "--studies", str(served)], "Give two round numbers"),
        (["export-traces", "--studies", str(served), "--output", str(tmp_path / "out")], "No rewarded traces"),
    ]
    for args, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    listed = json.loads(run("skills", "list", "--studies", str(served), "--json").stdout)
    assert listed["round"] == 0 and listed["rewards"] == 0 and len(listed["skills"]) == 14
