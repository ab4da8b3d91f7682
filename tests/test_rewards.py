"""Rewards from saved labels on real volumes: matching by the label's names, corrections, the raw-request baseline
through the real atlas backbone, the reasons a proposal earns no reward, and the trace ledger."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from seer.imaging.evidence import describe_volume
from seer.imaging.volume import VolumeCache, load_volume, write_mask
from seer.loop.rewards import FinalLabel, Rewarder, TraceLedger, label_names_from_info, naive_entry
from seer.loop.trace_log import TraceLog
from seer.metrics import dice
from seer.reasoning.targets import LabelTable
from seer.segmentation.atlases import LabelRegistry, bundled_atlases
from seer.segmentation.backbones.atlas import AtlasBackbone

from conftest import label_map

LIVER, SPLEEN, KIDNEY_LEFT = 5, 1, 3


def test_label_names_come_from_label_names_or_slicers_label_info_never_from_guessing():
    assert label_names_from_info({"label_names": {"liver": 5, "background": 0}}) == {5: "liver"}
    assert label_names_from_info({"params": {"label_names": {"spleen": "1"}}}) == {1: "spleen"}
    assert label_names_from_info({"label_info": [{"name": "Liver", "idx": 2}, {"name": "bg", "idx": 0}]}) == {2: "Liver"}
    assert label_names_from_info({"ts": 1, "name": "x.nii.gz"}) is None
    assert label_names_from_info(None) is None


@pytest.mark.parametrize(
    "raw,expected,why",
    [
        ("liver", "liver", "exact label name"),
        ("Kidney_Left", "kidney_left", "exact label name"),
        ("the liver pls", "liver", "label name in the request"),
        ("rt kidney", None, "no label name in the request"),
        ("livr", None, "no label name in the request"),
        ("liver or spleen", "spleen", "label name in the request"),  # naive: the longest name wins
        ("", None, "empty request"),
    ],
)
def test_naive_resolution_is_exact_or_substring_label_name(raw, expected, why):
    table = LabelTable({1: "spleen", 3: "kidney_left", 5: "liver"})
    entry, method = naive_entry(raw, table)
    assert (entry.name if entry else None, method) == (expected, why)


def test_a_text_promptable_backbone_gets_the_raw_request_as_its_prompt(tiny_voxtell, tmp_path):
    from tiny_models import build_tiny_text_encoder

    from seer.loop.rewards import raw_baseline_entry
    from seer.segmentation.backbones.voxtell import VoxTellBackbone, VoxTellSettings

    registry = LabelRegistry()
    backbone = VoxTellBackbone(VoxTellSettings(model_dir=str(tiny_voxtell), device="cpu",
                                               text_encoder=str(build_tiny_text_encoder(tmp_path / "encoder"))),
                               registry)
    assert backbone.free_text
    before = registry.table()
    entry, method = raw_baseline_entry("  lt  kidney pls ", backbone)
    assert (entry.prompt, entry.id, method) == ("lt kidney pls", 0, "raw request as the backbone's text prompt")
    assert registry.table() == before  # a baseline is not a target: nothing registered
    assert backbone.embed([entry.prompt]).shape == (1, 1, 2560)  # the raw text goes through the text encoder
    assert raw_baseline_entry("   ", backbone) == (None, "empty request")


@pytest.fixture(scope="module")
def setting(tmp_path_factory, shared_data):
    """A study (ct-abdomen-small, stored one HU brighter so that it is not its own atlas), its true labels, and an
    atlas backbone whose only atlas is the original ct-abdomen-small folder."""
    folder = tmp_path_factory.mktemp("rewards")
    source = nib.load(str(shared_data / "ct-abdomen-small" / "image.nii.gz"))
    study = folder / "study.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(source.dataobj).astype(np.float32) + 1, source.affine), str(study))
    atlases = folder / "atlases"
    atlases.mkdir()
    (atlases / "ct-small").symlink_to(shared_data / "ct-abdomen-small")
    registry = LabelRegistry()
    backbone = AtlasBackbone(lambda: bundled_atlases([atlases]), registry, cache_dir=folder / "cache")
    truth = np.asanyarray(nib.load(str(shared_data / "ct-abdomen-small" / "labels.nii.gz")).dataobj)
    volumes = VolumeCache()
    return {"folder": folder, "study": study, "backbone": backbone, "truth": truth, "volumes": volumes,
            "names": label_map(shared_data / "ct-abdomen-small"), "registry": registry}


def _context(volume):
    class Context:
        evidence = describe_volume(volume)

    return Context()


def _proposal(setting, name: str, mask: np.ndarray, request: str, **extra) -> dict:
    volume = load_volume(setting["study"])
    entry = setting["backbone"].label_table().by_name[name]
    path = setting["folder"] / f"proposal-{name}-{len(request)}.nii.gz"
    write_mask(mask, volume, path, value=entry.id)
    return {"type": "trace", "id": f"t-{name}-{request}", "study": "s1", "request": request, "request_clean": request,
            "answer": f"Segment the {name}.", "target": {"id": entry.id, "name": entry.name}, "rationale": "",
            "skill_ids": [], "style": "abbr_or_short", "vis_cue": "ABDOMINAL_ORGANS", "format_valid": True,
            "proposal": str(path), **extra}


def _rewarder(setting):
    return Rewarder(setting["backbone"], _context, setting["volumes"].get, lambda sid: None, "test")


def _final(setting, names, label_path=None) -> FinalLabel:
    path = str(label_path or setting["folder"] / "final.nii.gz")
    if label_path is None:
        source = nib.load(str(setting["study"]))
        nib.save(nib.Nifti1Image(setting["truth"].astype(np.uint8), source.affine), path)
    return FinalLabel.of("s1", str(setting["study"]), path, names)


def test_reward_is_dice_against_the_same_target_found_by_the_labels_own_names(setting):
    truth = setting["truth"]
    proposal_mask = truth == LIVER
    proposal_mask[60:, :, :] = False  # a partial liver: Dice below 1
    expected = dice(proposal_mask, truth == LIVER)
    rows = [_proposal(setting, "liver", proposal_mask, "livr"),
            _proposal(setting, "liver", proposal_mask, "the liver please"),
            _proposal(setting, "kidney_left", truth == KIDNEY_LEFT, "lt kidney")]
    final = _final(setting, {LIVER: "Liver", SPLEEN: "spleen", KIDNEY_LEFT: "left kidney"})  # other spellings
    out, why = _rewarder(setting).rows(final, rows)
    assert why == "" and [r["type"] for r in out] == ["reward"] * 3
    livr, liver_pls, kidney = out
    assert livr["reference"] == "Liver" and livr["dice"] == pytest.approx(expected, abs=1e-6)
    assert livr["raw_dice"] == 0.0 and livr["gain"] == pytest.approx(expected, abs=1e-6)  # no label name in "livr"
    # "the liver please" names the label "liver": the raw baseline is the same target, the same mask
    assert liver_pls["raw_target"] == "liver" and liver_pls["raw_dice"] == liver_pls["dice"] and liver_pls["gain"] == 0
    assert kidney["reference"] == "left kidney" and kidney["dice"] == 1.0 and kidney["label_values"] == [KIDNEY_LEFT]
    assert kidney["target_phrase"] == "left kidney" and kidney["dataset"] == "test"


def test_each_proposal_has_its_own_baseline_when_the_raw_request_names_its_target(setting):
    """Two proposals for "liver" rewarded together: each one's raw baseline is its own mask, not the other's."""
    truth = setting["truth"]
    poor = np.zeros_like(truth, dtype=bool)
    poor[np.argwhere(truth == LIVER)[:50].T.tolist()] = True  # a sliver of liver
    rows = [_proposal(setting, "liver", poor, "liver"), _proposal(setting, "liver", truth == LIVER, "liver ")]
    out, _ = _rewarder(setting).rows(_final(setting, {LIVER: "liver"}), rows)
    assert out[0]["dice"] < 0.2 and out[1]["dice"] == 1.0
    assert [r["raw_dice"] for r in out] == [r["dice"] for r in out] and [r["gain"] for r in out] == [0.0, 0.0]


def test_a_label_saved_as_nrrd_as_slicer_does_scores_the_same(setting, tmp_path):
    import SimpleITK as sitk

    truth = setting["truth"]
    row = _proposal(setting, "kidney_left", truth == KIDNEY_LEFT, "lt kidney")
    study = sitk.ReadImage(str(setting["study"]))
    label = sitk.GetImageFromArray(np.ascontiguousarray(truth.astype(np.uint8).transpose(2, 1, 0)))
    label.CopyInformation(study)  # the study's grid, in ITK's LPS terms
    nrrd = tmp_path / "final.nrrd"
    sitk.WriteImage(label, str(nrrd))
    out, why = _rewarder(setting).rows(_final(setting, {KIDNEY_LEFT: "kidney_left"}, nrrd), [row])
    assert why == "" and out[0]["type"] == "reward" and out[0]["dice"] == 1.0


@pytest.mark.slow
def test_raw_baseline_of_another_target_runs_the_real_backbone(setting):
    """SEER proposed the liver for a request the naive baseline reads as 'spleen': the baseline is the backbone's
    spleen, scored against the liver the annotator kept."""
    truth = setting["truth"]
    row = _proposal(setting, "liver", truth == LIVER, "spleen")
    out, _ = _rewarder(setting).rows(_final(setting, {LIVER: "liver", SPLEEN: "spleen"}), [row])
    assert out[0]["dice"] == 1.0 and out[0]["raw_target"] == "spleen"
    assert out[0]["raw_dice"] < 0.05 and out[0]["gain"] > 0.95  # the backbone's spleen hardly touches the liver


def test_a_proposal_corrected_to_another_structure_is_scored_against_it(setting):
    truth = setting["truth"]
    row = _proposal(setting, "liver", truth == LIVER, "spleen pls")  # SEER was wrong; the annotator drew the spleen
    only_spleen = setting["folder"] / "only-spleen.nii.gz"
    nib.save(nib.Nifti1Image((truth == SPLEEN).astype(np.uint8), nib.load(str(setting["study"])).affine),
             str(only_spleen))
    out, _ = _rewarder(setting).rows(_final(setting, {1: "spleen"}, only_spleen), [row])
    assert out[0]["type"] == "reward" and out[0]["corrected_to"] == "spleen" and out[0]["dice"] == 0.0


@pytest.mark.parametrize("case", ["no names", "other grid", "target absent", "proposal gone"])
def test_no_reward_with_a_reason(setting, case, shared_data, tmp_path):
    truth = setting["truth"]
    row = _proposal(setting, "liver", truth == LIVER, "liver")
    names = {LIVER: "liver"}
    final = None
    if case == "no names":
        final = _final(setting, None)
    elif case == "other grid":
        final = _final(setting, names, shared_data / "ct-abdomen-pelvis" / "labels.nii.gz")
    elif case == "target absent":
        names = {KIDNEY_LEFT: "kidney_left", SPLEEN: "spleen"}
        row["request"] = row["request_clean"] = "the liver"
    elif case == "proposal gone":
        moved = tmp_path / "moved.nii.gz"
        shutil.move(row["proposal"], moved)
    out, why = _rewarder(setting).rows(final or _final(setting, names), [row])
    assert out[0]["type"] == "reward_skipped"
    expected = {"no names": "carries no label names", "other grid": "is on another grid",
                "target absent": "holds no 'liver' (it holds kidney_left, spleen)",
                "proposal gone": "is gone"}[case]
    assert expected in out[0]["reason"]
    assert (why != "") is (case in ("no names", "other grid"))


# -- the ledger ----------------------------------------------------------------------------------------------------
def test_ledger_rewards_a_proposal_once_and_retries_a_skip_only_for_a_new_label(tmp_path):
    log = TraceLog(tmp_path / "traces.jsonl")
    for i in range(3):
        log.append({"type": "trace", "id": f"t{i}", "study": "s", "target": {"id": 1, "name": "liver"},
                    "proposal": f"/p{i}.nii.gz"})
    log.append({"id": "old", "study": "s", "target": None, "refused": {"kind": "x"}})  # a refusal, no type field
    ledger = TraceLedger(log)
    assert [r["id"] for r in ledger.pending("s", "v1")] == ["t0", "t1", "t2"]
    assert ledger.append({"type": "reward", "trace_id": "t0", "dice": 0.9, "raw_dice": 0.1})
    assert not ledger.append({"type": "reward", "trace_id": "t0", "dice": 0.5, "raw_dice": 0.1})
    ledger.append({"type": "reward_skipped", "trace_id": "t1", "label_stamp": "v1", "reason": "r"})
    assert [r["id"] for r in ledger.pending("s", "v1")] == ["t2"]
    assert [r["id"] for r in ledger.pending("s", "v2")] == ["t1", "t2"]
    other = TraceLedger(TraceLog(tmp_path / "traces.jsonl"))  # a second reader sees the same
    assert other.reward_count() == 1 and [r["id"] for r in other.pending("s", "v1")] == ["t2"]
    assert other.rewards["t0"]["dice"] == 0.9
    assert sum(1 for line in (tmp_path / "traces.jsonl").read_text().splitlines()
               if json.loads(line).get("type") == "reward") == 1


def test_a_proposal_is_judged_by_the_first_label_saved_after_it(tmp_path):
    log = TraceLog(tmp_path / "traces.jsonl")
    log.append({"type": "trace", "id": "early", "study": "s", "target": {"id": 1, "name": "liver"}, "proposal": "/a"})
    saved_at = log.append({"type": "trace", "id": "x", "study": "other"})["ts"] + 0.0005
    late = log.append({"type": "trace", "id": "late", "study": "s", "target": {"id": 1, "name": "liver"},
                       "proposal": "/b", "ts": saved_at + 5})
    ledger = TraceLedger(log)
    assert [r["id"] for r in ledger.pending("s", "v1", saved_at)] == ["early"]  # "late" waits for the next save
    assert [r["id"] for r in ledger.pending("s", "v2", late["ts"] + 1)] == ["early", "late"]


def test_a_torn_last_line_is_skipped_and_the_next_row_survives(tmp_path):
    log = TraceLog(tmp_path / "traces.jsonl")
    log.append({"type": "trace", "id": "a"})
    with open(tmp_path / "traces.jsonl", "a") as fp:
        fp.write('{"type": "trace", "id": "torn"')  # a writer died mid-line
    ledger = TraceLedger(log)
    ledger.refresh()
    assert list(ledger.traces) == ["a"]  # the fragment is not consumed yet (no newline)
    log.append({"type": "trace", "id": "b"})
    ledger.refresh()
    assert list(ledger.traces) == ["a", "b"]
    assert [r["id"] for r in log.read()] == ["a", "b"]


def test_the_trace_log_rotates_without_losing_what_rewards_need(tmp_path):
    """Past its size bound the live log goes to a gzip archive and keeps only the rows of proposals still waiting
    for a reward; a ledger following the log and a fresh one both see every row exactly once."""
    log = TraceLog(tmp_path / "traces.jsonl", max_mb=0.01)  # ~10 kB
    follower = TraceLedger(log)
    padding = "x" * 400

    def proposal(i):
        return {"type": "trace", "id": f"t{i}", "study": f"s{i % 3}", "proposal": f"/p/{i}.nii.gz",
                "target": {"id": 1, "name": "liver"}, "rationale": padding}

    for i in range(30):
        log.append(proposal(i))
        if i % 4 != 3:  # t3, t7, ... t27 wait for their reward
            log.append({"type": "reward", "trace_id": f"t{i}", "study": f"s{i % 3}", "dice": 0.9})
        follower.refresh()
    log.append({"type": "reward", "trace_id": "t27", "study": "s0", "dice": 0.8})  # a reward after rotation
    assert log.archives(), "the log never rotated"
    live = [r for r in log.read_from(0)[0]]
    assert log.path.stat().st_size < 0.01 * 2**20
    live_traces = {r["id"] for r in live if r["type"] == "trace"}
    assert len(live_traces) < 30 and {f"t{i}" for i in range(3, 27, 4)} <= live_traces  # pending ones stay live
    fresh = TraceLedger(log)
    fresh.refresh()
    follower.refresh()
    for ledger in (fresh, follower):
        assert sorted(ledger.traces) == sorted(f"t{i}" for i in range(30))
        assert sorted(ledger.rewards) == sorted([f"t{i}" for i in range(30) if i % 4 != 3] + ["t27"])
        assert sum(len(ids) for ids in ledger.proposals_by_study.values()) == 30  # none counted twice
        assert sorted(ledger.studies_with_pending()) == ["s0", "s1", "s2"]
    assert len(log.read_all()) >= 30 + 24
