"""`evaluate` on a small manifest of real CT, with the summary checked by hand from the per-request Dice, and the
manifest rows that cannot run (reported and skipped; exit code 2 only when none can)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from seer.training.evaluate import read_manifest, summarize

from conftest import REPO

LIVER = 5


def evaluate(*args, env_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(env_dir))  # registrations cached per test
    return subprocess.run([sys.executable, str(REPO / "main.py"), "evaluate", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.slow
def test_evaluate_measures_seer_against_raw_and_skips_bad_rows(tmp_path, shared_data):
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-pelvis").symlink_to(shared_data / "ct-abdomen-pelvis")
    small = shared_data / "ct-abdomen-small"
    case = {"image": str(small / "image.nii.gz"), "label": str(small / "labels.nii.gz"), "label_id": LIVER,
            "label_name": "liver", "dataset": "abdomen", "case_id": "slab",
            "requests": ["liver", "livr", "the liver pls", "kidney"]}
    lines = [
        json.dumps(case),
        "{not json",
        json.dumps(case | {"image": str(tmp_path / "missing.nii.gz")}),
        json.dumps(case | {"label_id": 999, "case_id": "absent"}),
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    proc = evaluate(str(manifest), "--output", str(out), "--reasoner", "offline", "--atlases", str(atlases),
                    env_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "line 2 is not a JSON object" in proc.stderr
    assert "line 3: image" in proc.stderr and "does not exist" in proc.stderr
    assert "line 4: label id 999 does not occur" in proc.stderr
    assert "Dice SEER" in proc.stdout and "abdomen" in proc.stdout  # the table

    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    by_request = {r["request"]: r for r in rows}
    assert list(by_request) == case["requests"]
    d = by_request["liver"]["dice"]
    assert d > 0.9  # the atlas's liver on this slab
    assert by_request["livr"]["dice"] == by_request["the liver pls"]["dice"] == d  # same target, same mask
    assert by_request["kidney"]["refused"] and by_request["kidney"]["dice"] == 0.0  # which side? a refusal
    assert "say left or right" in by_request["kidney"]["refusal"]
    assert [by_request[r]["raw_dice"] for r in case["requests"]] == [d, 0.0, d, 0.0]
    assert by_request["the liver pls"]["raw_target"] == "liver" and by_request["livr"]["raw_target"] is None

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped"]) == 3
    (target,) = summary["targets"]
    # by hand: SEER [d, d, d, 0], raw [d, 0, d, 0]; population std; one case
    assert target["cases"] == 1 and target["requests"] == 4 and target["refusals"] == 1
    assert target["mean_dice_seer"] == pytest.approx(3 * d / 4, abs=1e-5)
    assert target["std_across_variants"] == pytest.approx(d * math.sqrt(3) / 4, abs=1e-5)
    assert target["worst_case_dice"] == 0.0
    assert target["mean_dice_raw"] == pytest.approx(d / 2, abs=1e-5)
    assert target["std_across_variants_raw"] == pytest.approx(d / 2, abs=1e-5)
    assert target["reasoning_overhead"] > 0 and target["segmentation_s"] > 0
    assert (out / "dice_spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_runnable_row_exits_2_with_a_sentence(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{oops\n{"image": "/nope.nii.gz", "label": "/nope.nii.gz", "label_id": 1, "requests": ["x"]}\n')
    proc = evaluate(str(manifest), "--output", str(tmp_path / "out"), env_dir=tmp_path)
    assert proc.returncode == 2
    assert "No row of" in proc.stderr and "2 skipped" in proc.stderr
    missing = evaluate(str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "out"), env_dir=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_seer_trace_rows_are_grouped_into_cases(tmp_path):
    image, label = tmp_path / "i.nii.gz", tmp_path / "l.nii.gz"
    image.write_bytes(b"x")
    label.write_bytes(b"x")
    base = {"image": str(image), "label": str(label), "label_id": 3, "label_name": "kidney_left", "case_id": "c1",
            "dataset": "team"}
    rows = [base | {"raw_prompt": "lt kidney"}, base | {"raw_prompt": "left kidney pls"},
            base | {"raw_prompt": "liver", "label_id": 5, "label_name": "liver"},
            base | {"raw_prompt": ""}, base | {"requests": []}]
    manifest = tmp_path / "traces.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cases, problems = read_manifest(manifest)
    assert [(c.label_name, c.requests) for c in cases] == [("kidney_left", ["lt kidney", "left kidney pls"]),
                                                          ("liver", ["liver"])]
    assert [p["line"] for p in problems] == [4, 5]


def test_summary_averages_per_case_before_averaging_cases():
    rows = []
    for case, dices in (("a", [1.0, 0.5]), ("b", [0.2, 0.2, 0.2, 0.2])):
        for d in dices:
            rows.append({"dataset": "x", "target": "t", "case_id": case, "dice": d, "raw_dice": 0.0, "refused": False,
                         "reasoning_s": 0.01, "segmentation_s": 0.1})
    (item,) = summarize(rows)
    assert item["mean_dice_seer"] == pytest.approx((0.75 + 0.2) / 2)
    assert item["std_across_variants"] == pytest.approx((0.25 + 0.0) / 2)
    assert item["worst_case_dice"] == pytest.approx((0.5 + 0.2) / 2)
    assert item["reasoning_overhead"] == pytest.approx(0.1)
