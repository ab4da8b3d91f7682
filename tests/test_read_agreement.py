"""Several reads per study: agreement between two reads (MONAI's Dice and mean surface distance), the review desk's
save / approve / reject flow over kept reads, active learning's hand-out to distinct readers, and rewards withdrawn
after a rejection leaving skill rounds and exported datasets."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from seer.active_learning.study_state import StudyState
from seer.loop.rewards import TraceLedger
from seer.loop.skill_rounds import SkillRounds
from seer.loop.trace_log import TraceLog
from seer.metrics import dice
from seer.reasoning.skills import SkillBank
from seer.review.agreement import read_agreement, structure_agreement
from seer.review.desk import ReviewDesk
from seer.review.label_reads import LabelReads

NAMES = {"liver": 1, "spleen": 2}


def write_read(path, shifted: int = 0, spleen: bool = True, spacing=(2.0, 1.0, 1.0), liver_value: int = 1):
    """A 30x30x20 label: a 10x10x10 liver cube (shifted along x by `shifted` voxels) and a 4x4x4 spleen."""
    data = np.zeros((30, 30, 20), np.uint8)
    data[5 + shifted:15 + shifted, 5:15, 5:15] = liver_value
    if spleen:
        data[20:24, 20:24, 10:14] = 2
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


# -- agreement -------------------------------------------------------------------------------------------------------
def test_agreement_is_monai_dice_and_a_surface_distance_in_millimetres():
    a = np.zeros((30, 30, 20), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = True
    b[7:17, 5:15, 5:15] = True
    figures = structure_agreement(a, b, (1.0, 1.0, 1.0))
    assert figures["dice"] == pytest.approx(0.8) == pytest.approx(dice(a, b))  # 2 x 800 / 2000
    assert figures["voxels"] == [1000, 1000]
    assert 0 < figures["msd_mm"] < 2  # two faces 2 mm apart, the rest touching
    wider = structure_agreement(a, b, (2.0, 1.0, 1.0))
    assert wider["msd_mm"] > figures["msd_mm"]  # the shift is along the axis whose spacing doubled
    assert structure_agreement(a, a, (1.0, 1.0, 1.0)) == {"dice": 1.0, "msd_mm": 0.0, "voxels": [1000, 1000]}
    assert structure_agreement(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == {"dice": 0.0, "msd_mm": None,
                                                                          "voxels": [1000, 0]}


def test_reads_agree_by_structure_name_whatever_values_they_used(tmp_path):
    first = write_read(tmp_path / "a.nii.gz")
    second = write_read(tmp_path / "b.nii.gz", shifted=2, spleen=False, liver_value=7)
    figures = read_agreement(first, NAMES, second, {"liver": 7, "spleen": 2})
    assert figures["structures"]["liver"]["dice"] == pytest.approx(0.8)
    assert figures["structures"]["spleen"] == {"dice": 0.0, "msd_mm": None, "voxels": [64, 0]}
    assert figures["min_dice"] == 0.0 and figures["mean_dice"] == pytest.approx(0.4)
    other_grid = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(other_grid))
    with pytest.raises(ValueError, match="different grids"):
        read_agreement(first, NAMES, other_grid, NAMES)


# -- the review desk -------------------------------------------------------------------------------------------------
class Datastore:
    """The datastore's final label of each study, as the desk's three actions change it."""

    def __init__(self, folder):
        self.folder = folder
        self.labels: dict[str, tuple[bytes, dict, bool]] = {}
        self.taught: list[str] = []
        self.withdrawals: list[tuple[str, str, str]] = []

    def write_label(self, study, path, info, approved):
        self.labels[study] = (path.read_bytes(), info, approved)

    def teach(self, study, written):
        self.taught.append(study)

    def withdraw(self, study, reason, by):
        self.withdrawals.append((study, reason, by))
        return [f"reward-of-{study}"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def database(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres")


@pytest.fixture
def desk(tmp_path, database):
    store = Datastore(tmp_path)
    reads = LabelReads(database)
    return ReviewDesk(reads, review=True, review_self=False, min_dice=0.85, write_label=store.write_label,
                      teach=store.teach, withdraw=store.withdraw), store


def save(desk, study, annotator, path):
    took = desk.takes_label(study, annotator, "final")
    if took:
        desk.write_label(study, path, {"label_names": NAMES}, False)
    return desk.saved(study, annotator, "final", path, {"label_names": NAMES}, took), took


def test_two_reads_are_kept_side_by_side_with_their_agreement_and_the_disagreeing_one_is_reviewed_first(desk,
                                                                                                      tmp_path):
    desk, store = desk
    plain, moved = write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2)
    save(desk, "calm", "anonymous/carol", plain)  # an earlier single read elsewhere
    first, took = save(desk, "s", "anonymous/alice", plain)
    assert took and first["agreement"] == []
    second, took = save(desk, "s", "anonymous/bob", moved)
    assert took  # nothing approved yet: the newest submitted read is the label
    (pair,) = second["agreement"]
    assert pair["with"] == "anonymous/alice" and pair["disagrees"]
    assert pair["structures"]["liver"]["dice"] == pytest.approx(0.8)
    assert pair["structures"]["spleen"]["dice"] == 1.0
    stored = desk.reads.agreement("s")
    assert [(p["first"], p["second"], p["min_dice"]) for p in stored] == [
        ("anonymous/alice", "anonymous/bob", pytest.approx(0.8))]
    queue = desk.reads.queue(min_dice=0.85)
    assert [(r["study"], r["annotator"], r["disagrees"]) for r in queue][:2] == [
        ("s", "anonymous/alice", True), ("s", "anonymous/bob", True)]
    assert queue[-1]["study"] == "calm"  # older, but nothing to disagree with
    assert desk.status()["agreement"] == {"pairs": 1, "below_min_dice": 1, "min_dice": 0.85,
                                          "median_min_dice": pytest.approx(0.8)}


def test_approving_a_read_the_label_does_not_hold_writes_it_back_and_teaches(desk, tmp_path):
    desk, store = desk
    plain, moved = write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2)
    save(desk, "s", "anonymous/alice", plain)
    save(desk, "s", "anonymous/bob", moved)
    assert store.labels["s"][0] == moved.read_bytes()
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    assert store.labels["s"] == (plain.read_bytes(), {"label_names": NAMES}, True)
    assert store.taught == ["s"] and desk.reads.holder("s")["annotator"] == "anonymous/alice"
    # a third read while alice's approved read holds the label is kept beside it, not written
    third, took = save(desk, "s", "anonymous/carol", moved)
    assert not took and "Kept beside the approved label" in third["note"]
    assert store.labels["s"][0] == plain.read_bytes()
    assert {p["with"] for p in third["agreement"]} == {"anonymous/alice", "anonymous/bob"}
    # approving the one the label holds again rewrites nothing
    store.labels.clear()
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    assert store.labels == {}


def test_the_holders_new_save_beside_another_approved_read_hands_the_label_to_that_read(desk, tmp_path):
    """Alice's and bob's reads are both approved and the label holds alice's. Alice saves a new version: it goes
    back to review, so the label must not keep her old file; it passes to bob's approved read, which teaches."""
    desk, store = desk
    plain, moved, other = (write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2),
                           write_read(tmp_path / "c.nii.gz", shifted=1))
    save(desk, "s", "anonymous/bob", moved)
    desk.decide("s", "anonymous/bob", "approve", "anonymous/rev")
    save(desk, "s", "anonymous/alice", plain)
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    assert desk.reads.holder("s")["annotator"] == "anonymous/alice" and store.labels["s"][0] == plain.read_bytes()
    store.taught.clear()
    again, took = save(desk, "s", "anonymous/alice", other)
    assert not took and again["state"] == "submitted"
    assert desk.reads.holder("s")["annotator"] == "anonymous/bob"
    assert store.labels["s"] == (moved.read_bytes(), {"label_names": NAMES}, True)
    assert store.taught == ["s"] and desk.teaches("s")


def test_changes_to_one_study_take_turns_across_servers_and_threads(database):
    """Two LabelReads on one database (two servers) and three threads each: the study lock is held by one at a
    time (on PostgreSQL across the two; on SQLite within each server), reentrant, and another study is free."""
    import threading
    import time

    first, second = LabelReads(database), LabelReads(database)
    servers = [first, second] if database.startswith("postgresql") else [first]
    inside, overlaps = [], []

    def work(reads, name):
        for _ in range(8):
            with reads.study_lock("s"), reads.study_lock("s"):  # reentrant
                inside.append(name)
                overlaps.extend([list(inside)] if len(inside) > 1 else [])
                time.sleep(0.005)
                inside.remove(name)

    threads = [threading.Thread(target=work, args=(reads, f"{k}-{n}")) for k, reads in enumerate(servers)
               for n in range(3)]
    with first.study_lock("s"):
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        assert inside == []  # everyone waits for the holder
        other = threading.Thread(target=lambda: second.study_lock("t").__enter__())
        other.start()
        other.join(5)
        assert not other.is_alive()  # another study is not held up
    for thread in threads:
        thread.join(30)
    assert overlaps == [] and not any(t.is_alive() for t in threads)
    first.close()
    second.close()


def test_rejecting_the_approved_label_withdraws_what_it_taught_and_hands_the_label_on(desk, tmp_path):
    desk, store = desk
    plain, moved = write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2)
    save(desk, "s", "anonymous/alice", plain)
    save(desk, "s", "anonymous/bob", moved)
    desk.decide("s", "anonymous/bob", "approve", "anonymous/rev")
    store.taught.clear()
    read = desk.decide("s", "anonymous/bob", "reject", "anonymous/rev", "left lobe cut off")
    assert read["withdrawn"] == ["reward-of-s"]
    assert store.withdrawals == [("s", "the label of anonymous/bob was rejected after it was approved: left lobe "
                                       "cut off", "anonymous/rev")]
    assert store.labels["s"] == (plain.read_bytes(), {"label_names": NAMES}, False)  # alice's submitted read
    assert store.taught == [] and not desk.teaches("s")
    assert desk.reads.agreement("s") == []  # bob's read no longer counts
    # rejecting a read that is not the label withdraws nothing
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    save(desk, "s", "anonymous/bob", moved)
    desk.decide("s", "anonymous/bob", "approve", "anonymous/rev")  # bob's newer approval holds the label
    store.withdrawals.clear()
    assert "withdrawn" not in desk.decide("s", "anonymous/alice", "reject", "anonymous/rev", "not needed")
    assert store.withdrawals == [] and desk.teaches("s")


def test_the_slicer_reviewer_decides_on_the_read_the_label_holds(desk, tmp_path):
    desk, store = desk
    plain, moved = write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2)
    save(desk, "s", "anonymous/alice", plain)
    save(desk, "s", "anonymous/bob", moved)
    assert desk.from_label_info("s", "approved", "") == ("anonymous/bob", "approve", "")
    desk.decide("s", "anonymous/bob", "approve", "Dr. Rev")
    assert desk.from_label_info("s", "approved", "") is None  # the module saving its own state again
    assert desk.from_label_info("s", "flagged", "") == (
        "anonymous/bob", "reject", "flagged in the Slicer MONAI Label Reviewer module")


# -- several reads per study in active learning ----------------------------------------------------------------------
def test_a_study_is_handed_to_n_distinct_readers_and_never_twice_to_one(tmp_path, database):
    state = StudyState(database, reads_per_study=2)
    state.sync_studies({"s1": "a", "s2": "b"}, [])
    for reader in ("anonymous/alice", "anonymous/bob"):
        for _ in range(2):
            got = state.hand_out(reader, 600)
            assert got is not None
            assert state.record_reader(got.study, reader) is (reader == "anonymous/bob")
        assert state.hand_out(reader, 600) is None  # read both: never handed one again
    assert state.counts()["labelled"] == 2
    assert state.hand_out("anonymous/carol", 600) is None  # a third read is never handed out
    assert state.readers("s1") == ["anonymous/alice", "anonymous/bob"]
    # a final label from outside the API counts as a read only with one read per study
    state.sync_studies({"s1": "a", "s2": "b", "s3": "c"}, ["s3"])
    assert state.study("s3")["labelled"] == 0
    assert StudyState(f"sqlite:///{tmp_path / 'one.db'}").sync_studies({"s3": "c"}, ["s3"])["added"] == 1


def test_a_first_readers_save_frees_the_study_for_the_next_reader_at_once(tmp_path):
    state = StudyState(f"sqlite:///{tmp_path / 'state.db'}", reads_per_study=2)
    state.sync_studies({"s1": "a"}, [])
    assert state.hand_out("anonymous/alice", 600).study == "s1"
    assert state.hand_out("anonymous/bob", 600) is None  # alice holds it
    state.record_reader("s1", "anonymous/alice")
    assert state.lease("s1") is None
    assert state.hand_out("anonymous/bob", 600).study == "s1"


# -- withdrawn rewards -------------------------------------------------------------------------------------------------
def test_withdrawn_rewards_keep_their_place_but_leave_rounds_counts_and_exports(tmp_path):
    log = TraceLog(tmp_path / "traces.jsonl")
    ledger = TraceLedger(log)
    for i in range(4):
        study = "bad" if i < 2 else "good"
        log.append({"type": "trace", "id": f"t{i}", "study": study, "request": f"liver {i}",
                    "target": {"id": 1, "name": "liver"}, "target_phrase": "liver", "proposal": f"/p{i}"})
        ledger.append({"type": "reward", "trace_id": f"t{i}", "study": study, "dice": 0.9, "raw_dice": 0.1,
                       "request": f"liver {i}", "target_phrase": "liver", "format_valid": True})
    assert ledger.withdraw("bad", "rejected", "anonymous/rev") == ["t0", "t1"]
    assert ledger.withdraw("bad", "rejected", "anonymous/rev") == []  # once
    fresh = TraceLedger(TraceLog(tmp_path / "traces.jsonl"))  # what another reader of the log sees
    assert [(r.trace_id, r.withdrawn) for r in fresh.rewarded_traces()] == [
        ("t0", True), ("t1", True), ("t2", False), ("t3", False)]
    assert fresh.reward_counts() == {"good": 2} and fresh.withdrawn_count() == 2
    rows = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert [r for r in rows if r.get("type") == "withdrawal"][0]["by"] == "anonymous/rev"
    rounds = SkillRounds(tmp_path / "rounds", round_size=4, seed=SkillBank.starter)
    (report,) = rounds.close_due(fresh.rewarded_traces())
    assert report.rewards == 2  # the two withdrawn rewards left the round that closed on them
    record = rounds.report(1)
    assert record["trace_ids"] == ["t2", "t3"] and record["withdrawn"] == ["t0", "t1"]
    assert (record["reward_start"], record["reward_end"]) == (0, 4)


def test_an_export_leaves_withdrawn_rewards_out(tmp_path, sample_data):
    from seer.loop.export import export_traces

    image = sample_data / "ct_pelvis.nii.gz" if (sample_data / "ct_pelvis.nii.gz").exists() else next(
        sample_data.glob("*.nii.gz"))
    shutil.copy(image, tmp_path / "image.nii.gz")
    log = TraceLog(tmp_path / "traces.jsonl")
    ledger = TraceLedger(log)
    for i, study in enumerate(("bad", "good")):
        log.append({"type": "trace", "id": f"t{i}", "study": study, "request": "liver", "answer": "<answer>liver",
                    "target": {"id": 1, "name": "liver"}, "proposal": f"/p{i}"})
        ledger.append({"type": "reward", "trace_id": f"t{i}", "study": study, "dice": 0.9, "raw_dice": 0.1,
                       "image": str(tmp_path / "image.nii.gz"), "reference": "liver", "label_values": [1]})
    ledger.withdraw("bad", "rejected", "rev")
    written = export_traces(ledger, tmp_path / "out")
    assert written["rows"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "seer_traces.jsonl").read_text().splitlines()]
    assert [r["trace_id"] for r in rows] == ["t1"]


def test_a_label_no_save_made_is_adopted_as_the_datastores_read(desk, tmp_path):
    desk, store = desk
    plain = write_read(tmp_path / "a.nii.gz")
    read = desk.adopt("s", plain, {"label_names": NAMES})
    assert (read["annotator"], read["state"]) == ("datastore", "submitted")
    assert desk.from_label_info("s", "approved", "") == ("datastore", "approve", "")
    with desk.reads.mask_file("s", "datastore") as kept:
        assert kept[0].read_bytes() == plain.read_bytes()


def test_rejecting_the_submitted_read_the_label_holds_hands_the_label_to_the_other(desk, tmp_path):
    desk, store = desk
    plain, moved = write_read(tmp_path / "a.nii.gz"), write_read(tmp_path / "b.nii.gz", shifted=2)
    save(desk, "s", "anonymous/alice", plain)
    save(desk, "s", "anonymous/bob", moved)  # bob's holds the label
    read = desk.decide("s", "anonymous/bob", "reject", "anonymous/rev", "shifted")
    assert "withdrawn" not in read and store.withdrawals == []  # it never taught
    assert desk.reads.holder("s")["annotator"] == "anonymous/alice"
    assert store.labels["s"] == (plain.read_bytes(), {"label_names": NAMES}, False)
    # the Slicer module now sees alice's read
    assert desk.from_label_info("s", "approved", "") == ("anonymous/alice", "approve", "")


def test_the_same_decision_sent_again_redoes_its_effects(desk, tmp_path):
    desk, store = desk
    plain = write_read(tmp_path / "a.nii.gz")
    save(desk, "s", "anonymous/alice", plain)
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    desk.decide("s", "anonymous/alice", "approve", "anonymous/rev")  # e.g. the first time the PACS was down
    assert store.taught == ["s", "s"]


def test_without_review_or_double_reads_no_file_is_kept_and_nothing_compared(tmp_path):
    store = Datastore(tmp_path)
    desk = ReviewDesk(LabelReads(f"sqlite:///{tmp_path / 'state.db'}"), review=False, review_self=False,
                      min_dice=0.8, write_label=store.write_label, teach=store.teach, withdraw=store.withdraw,
                      keep_reads=False)
    plain = write_read(tmp_path / "a.nii.gz")
    first, _ = save(desk, "s", "anonymous/alice", plain)
    second, _ = save(desk, "s", "anonymous/bob", plain)
    assert (first["state"], second["state"], second["agreement"]) == ("approved", "approved", [])
    assert desk.reads.with_masks("s") == [] and desk.reads.holder("s")["annotator"] == "anonymous/bob"
    assert desk.teaches("s")


@pytest.mark.server
def test_the_study_lock_survives_a_postgresql_restart_and_says_when_it_is_down(own_postgres):
    """The connection kept for the advisory locks dies with a restart: the next lock takes a new one. While the
    database is down, taking the lock is a StateUnavailable (503) sentence."""
    from seer.errors import StateUnavailable

    reads = LabelReads(own_postgres.url)
    try:
        with reads.study_lock("s"):
            pass
        own_postgres.stop()
        own_postgres.start()
        with reads.study_lock("s"):  # the kept connection died with the restart: a new one is taken
            pass
        own_postgres.stop()
        with pytest.raises(StateUnavailable, match="cannot be reached|does not answer"), reads.study_lock("s"):
            pass
        own_postgres.start()
        with reads.study_lock("s"), reads.study_lock("t"):
            pass
    finally:
        reads.close()
