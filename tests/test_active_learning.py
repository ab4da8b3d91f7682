"""Scoring `seer` and `simulate-al` without a server: the campaign from the trace log, phrasings from the skill
bank and the log, partial rescoring when only one part's stamp changed, AUBC, and the simulate-al command on
real CT cases (its outputs and its bad input)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from test_cli import run

from seer.active_learning.scoring import (
    ScoringSettings,
    StudyScorer,
    campaign_from_traces,
    trace_requests_by_target,
)
from seer.active_learning.simulate import aubc
from seer.imaging.volume import load_volume
from seer.pipeline import build_pipeline
from seer.settings import SeerSettings


def trace(target_id, name, phrase, request, refused=False):
    row = {"type": "trace", "id": request, "request_clean": request, "target": {"id": target_id, "name": name},
           "target_phrase": phrase}
    if refused:
        row["refused"] = {"kind": "empty_mask"}
    return row


def test_campaign_is_the_most_frequent_resolved_targets():
    rows = [trace(1, "liver", "liver", "livr")] * 3 + [trace(2, "spleen", "spleen", "splen")] * 2 + [
        trace(3, "kidney_left", "left kidney", "lt kidney")] * 2 + [trace(4, "aorta", "aorta", "aorta")] + [
        trace(4, "aorta", "aorta", "aorta", refused=True)] * 5 + [{"type": "reward", "id": "x"}]
    assert campaign_from_traces(rows) == ["liver", "left kidney", "spleen"]
    assert trace_requests_by_target(rows)[1] == {"livr": 3}


@pytest.fixture(scope="module")
def pelvis_pipeline(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("scoring")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "pelvis").symlink_to(shared_data / "ct-abdomen-pelvis")
    settings = SeerSettings.from_conf({"atlases": str(atlases), "reasoner": "offline"})
    image = nib.load(str(shared_data / "ct-abdomen-pelvis" / "image.nii.gz"))
    affine = image.affine.copy()
    study = root / "pelvis_lower.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :64], affine), str(study))
    return build_pipeline(settings, root / ".seer"), load_volume(study), atlases, shared_data


@pytest.mark.slow
def test_phrasings_and_partial_rescoring(pelvis_pipeline):
    pipeline, volume, atlases, shared_data = pelvis_pipeline
    scorer = StudyScorer(pipeline, ScoringSettings(phrasings=4))
    by_target = {pipeline.backbone.label_table().names()["sacrum"]: {"sacral bone": 2, "sacrum": 5}}
    phrasings = scorer.phrasings("right hip bone", by_target)
    assert phrasings[0] == "right hip bone" and "rt hip" in phrasings and len(phrasings) <= 4
    assert "sacral bone" in scorer.phrasings("sacrum", by_target)

    campaign = ["right hip bone", "sacrum"]
    table = {r: scorer.phrasings(r, by_target) for r in campaign}
    stamps = scorer.stamps(table)
    first = scorer.score("pelvis_lower", "v1", volume, campaign, table, {}, stamps)
    assert first.recomputed == {"reasoning": 2, "backbone": 2} and first.in_view
    for row in first.rows:
        assert row.details["backbone"]["in_view_fraction"] > 0.9 and 0 <= row.uncertainty < 0.5
        assert row.score == pytest.approx(row.disagreement + row.skill_gap + row.uncertainty, abs=1e-3)
    previous = {r.request: r for r in first.rows}
    # nothing changed: nothing recomputed, same rows
    again = scorer.score("pelvis_lower", "v1", volume, campaign, table, previous, stamps)
    assert again.recomputed == {"reasoning": 0, "backbone": 0} and again.rows == first.rows
    # a new atlas changes the backbone stamp only: the reasoning parts are kept
    (atlases / "pelvis_copy").symlink_to(shared_data / "ct-abdomen-pelvis")
    pipeline.backbone.refresh()
    try:
        stamps = scorer.stamps(table)  # a new pass sees the new atlas set
        changed = scorer.score("pelvis_lower", "v1", volume, campaign, table, previous, stamps)
        assert changed.recomputed == {"reasoning": 0, "backbone": 2}
        # a new image version recomputes everything
        fresh = scorer.score("pelvis_lower", "v2", volume, campaign, table, {r.request: r for r in changed.rows},
                             stamps)
        assert fresh.recomputed == {"reasoning": 2, "backbone": 2}
    finally:
        (atlases / "pelvis_copy").unlink()
        pipeline.backbone.refresh()


def test_aubc_is_the_normalised_trapezoid_area():
    assert aubc([0.0, 1.0]) == 0.5
    assert aubc([0.0, 0.5, 1.0, 1.0]) == pytest.approx((0.25 + 0.75 + 1.0) / 3)
    assert aubc([0.7]) == 0.7


@pytest.fixture(scope="module")
def spleen_cases(tmp_path_factory, shared_data):
    """Three cases cut from the hand-labelled spleen CT (one patient: this checks the loop, not the result)."""
    root = tmp_path_factory.mktemp("sim-cases")
    source = shared_data / "ct-spleen"
    image, labels = nib.load(str(source / "image.nii.gz")), nib.load(str(source / "labels.nii.gz"))
    for name, (z0, z1) in {"a_full": (0, None), "b_top": (0, 20), "c_bottom": (6, None)}.items():
        case = root / name
        case.mkdir()
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [0, 0, z0] + image.affine[:3, 3]
        for what, img in (("image", image), ("labels", labels)):
            data = np.asanyarray(img.dataobj)[:, :, z0:z1]
            nib.save(nib.Nifti1Image(data, affine), str(case / f"{what}.nii.gz"))
        shutil.copy(source / "labels.json", case / "labels.json")
    return root


@pytest.mark.slow
def test_simulate_al_writes_curves_per_strategy(spleen_cases, tmp_path):
    out = tmp_path / "out"
    proc = run("simulate-al", "--studies", str(spleen_cases), "--campaign", "spleen", "--steps", "2",
               "--held-out", "a_full", "--strategies", "seer,first,random", "--output", str(out))
    result = json.loads((out / "aubc.json").read_text())
    assert result["held_out"] == ["a_full"] and sorted(result["pool"]) == ["b_top", "c_bottom"]
    for name in ("seer", "first", "random"):
        run_ = result["strategies"][name]
        assert len(run_["curve"]) == 3 and run_["curve"][0] == 0.0  # no spleen atlas before the first label
        assert all(0.0 <= d <= 1.0 for d in run_["curve"]) and run_["curve"][-1] > 0.5
        assert run_["aubc"] == pytest.approx(aubc(run_["curve"]), abs=1e-3)
        assert sorted(p["case"] for p in run_["picks"]) == ["b_top", "c_bottom"]
    assert [p["case"] for p in result["strategies"]["first"]["picks"]] == ["b_top", "c_bottom"]
    assert (out / "dice_vs_budget.png").stat().st_size > 1000
    assert "AUBC" in proc.stdout


@pytest.mark.slow
def test_simulate_al_with_two_reads_runs_each_strategy_without_and_with_review(spleen_cases, tmp_path):
    """Every read careless: without review the newest (damaged) read teaches; with review none is approved, so the
    case teaches nothing and the curve stays at its start."""
    from seer.active_learning.simulate import careless_read, read_cases, write_careless

    out = tmp_path / "out"
    run("simulate-al", "--studies", str(spleen_cases), "--campaign", "spleen", "--steps", "1", "--held-out",
        "a_full", "--strategies", "first", "--reads", "2", "--careless", "1", "--output", str(out))
    result = json.loads((out / "aubc.json").read_text())
    plain, reviewed = result["strategies"]["first"], result["strategies"]["first+review"]
    assert plain["picks"][0]["case"] == reviewed["picks"][0]["case"] == "b_top"
    assert plain["picks"][0]["reads"] == reviewed["picks"][0]["reads"]  # the same careless reads in both
    assert all(how in ("eroded", "shifted") for how in plain["picks"][0]["reads"])
    assert plain["picks"][0]["taught"] == 1 and reviewed["picks"][0]["taught"] is None
    assert reviewed["curve"] == [0.0, 0.0] and plain["curve"][1] > 0.0
    case = next(c for c in read_cases(spleen_cases) if c.name == "b_top")
    assert careless_read(case, 0, 5, 0.0) is None and careless_read(case, 0, 5, 1.0) in ("eroded", "shifted")
    assert careless_read(case, 1, 7, 0.5) == careless_read(case, 1, 7, 0.5)
    truth = np.asarray(nib.load(str(case.labels)).dataobj) > 0
    eroded = np.asarray(nib.load(str(write_careless(case, "eroded", 0, tmp_path / "e").labels)).dataobj) > 0
    assert 0 < eroded.sum() < truth.sum() and not (eroded & ~truth).any()


@pytest.mark.parametrize("args, message", [
    (["--campaign", "spleen", "--steps", "1", "--reads", "9"], "--reads must be between 1 and 5"),
    (["--campaign", "spleen", "--steps", "1", "--reads", "2", "--careless", "2"], "--careless must be a fraction"),
    (["--campaign", "spleen", "--steps", "1", "--strategies", "best"], "Unknown strategy best"),
    (["--campaign", "spleen", "--steps", "5", "--held-out", "a_full"], "--steps must be between 1 and the pool size"),
    (["--campaign", "spleen", "--steps", "1", "--held-out", "zz"], "No case named zz"),
    (["--campaign", " ; ", "--steps", "1"], "Give the campaign"),
])
def test_simulate_al_bad_input_exits_2(spleen_cases, tmp_path, args, message):
    proc = run("simulate-al", "--studies", str(spleen_cases), "--output", str(tmp_path / "o"), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_simulate_al_needs_two_cases(tmp_path):
    proc = run("simulate-al", "--studies", str(tmp_path), "--campaign", "spleen", "--steps", "1", "--output",
               str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "needs at least 2" in proc.stderr


def test_evidence_pass_drives_foreground_aware_random(pelvis_pipeline, sample_data, tmp_path):
    """Before any score exists, the hand-out picks among the studies whose evidence shows the campaign's targets
    (the pelvic CT for hip bones), and only then the others (a brain MRI), saying which it did."""
    from seer.active_learning.strategy import ActiveLearning
    from seer.active_learning.study_state import StudyState

    pipeline, volume, _, _ = pelvis_pipeline
    brain = load_volume(sample_data / "mni152_t1.nii.gz")
    volumes = {"pelvis_lower": volume, "mni152": brain}
    state = StudyState(f"sqlite:///{tmp_path / 'state.db'}")
    learning = ActiveLearning(state, StudyScorer(pipeline), list_studies=lambda: ({s: "1" for s in volumes}, []),
                              load_volume=volumes.__getitem__, trace_rows=list, campaign=["left hip bone"],
                              lease_s=60)
    learning.sync()
    assert learning._evidence_pass({}, ["left hip bone"], say=lambda m: None) == 2
    assert state.study("pelvis_lower")["in_view"] == 1 and state.study("mni152")["in_view"] == 0
    first = learning.next_study("alice")
    assert (first["id"], first["selection"]) == ("pelvis_lower", "foreground-aware random")
    assert "left hip bone" in first["note"] and "in view" in first["note"]
    second = learning.next_study("bob")
    assert (second["id"], second["selection"]) == ("mni152", "random")
    assert "message" in learning.next_study("carol")
    state.close()
