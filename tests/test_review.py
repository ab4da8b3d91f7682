"""Review states of each annotator's label (seer.review.label_reads), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from seer.errors import BadRequest, Conflict, Forbidden, StudyNotFound
from seer.review.label_reads import LabelReads


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def reads(request, tmp_path) -> LabelReads:
    url = f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres")
    return LabelReads(url)


def test_a_read_goes_draft_submitted_approved_and_a_draft_never_undoes_a_submission(reads):
    assert reads.saved("s", "anonymous/alice", "draft-1", final=False, approve=False)["state"] == "draft"
    assert reads.saved("s", "anonymous/alice", "final", final=True, approve=False)["state"] == "submitted"
    after_draft = reads.saved("s", "anonymous/alice", "draft-2", final=False, approve=False)
    assert (after_draft["state"], after_draft["label_tag"]) == ("submitted", "final")
    assert [r["annotator"] for r in reads.queue()] == ["anonymous/alice"]
    assert not reads.approved("s")
    read = reads.decide("s", "anonymous/alice", "approve", "anonymous/rev")
    assert (read["state"], read["was"], read["reviewer"]) == ("approved", "submitted", "anonymous/rev")
    assert reads.approved("s") and reads.approved_studies() == {"s"} and reads.queue() == []


def test_review_off_approves_a_final_save_and_a_rejection_is_submitted_again(reads):
    assert reads.saved("s", "bob", "final", final=True, approve=True)["state"] == "approved"
    reads.saved("t", "bob", "final", final=True, approve=False)
    rejected = reads.decide("t", "bob", "reject", "carol", "the tail of the pancreas is missing")
    assert rejected["state"] == "rejected" and rejected["comment"] == "the tail of the pancreas is missing"
    assert not reads.approved("t")
    again = reads.saved("t", "bob", "final", final=True, approve=False)
    assert again["state"] == "submitted" and again["comment"] is None and again["reviewer"] is None


@pytest.mark.parametrize("decision, annotator, comment, own, error, words", [
    ("maybe", "a", "", False, BadRequest, "send \"approve\" or \"reject\""),
    (None, "a", "", False, BadRequest, "is not a decision"),
    ("reject", "a", "", False, BadRequest, "needs a comment"),
    ("approve", "nobody", "", False, StudyNotFound, "annotators with one: a, d"),
    ("approve", "d", "", False, Conflict, "is a draft"),
    ("approve", "a", "", True, Forbidden, "cannot review their own label"),
])
def test_bad_decisions_are_one_sentence_and_change_nothing(reads, decision, annotator, comment, own, error, words):
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.saved("s", "d", "draft", final=False, approve=False)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        reads.decide("s", annotator, decision, "a" if own else "rev", comment, own=own)
    assert [r["state"] for r in reads.reads("s")] == ["submitted", "draft"]


def test_ones_own_label_may_be_reviewed_when_allowed(reads):
    reads.saved("s", "a", "final", final=True, approve=False)
    assert reads.decide("s", "a", "approve", "a", own=True, allow_own=True)["state"] == "approved"


def test_the_label_holds_the_newest_approved_read_else_the_newest_submitted(reads):
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.saved("s", "b", "final", final=True, approve=False)
    assert reads.label_read("s")["annotator"] == "b"
    assert reads.takes_label("s", "c", approve=False)  # nothing approved yet: a new read takes the label
    reads.decide("s", "a", "approve", "rev")
    assert reads.label_read("s")["annotator"] == "a"
    assert not reads.takes_label("s", "c", approve=False)  # a's approved read holds it: c's is kept beside
    assert reads.takes_label("s", "a", approve=False)  # a correcting a's own read takes it
    assert reads.takes_label("s", "c", approve=True)  # review off: every save is approved and takes it
    assert reads.decide("s", "a", "approve", "rev")["was"] == "approved"  # approving again changes nothing
    reads.decide("s", "b", "approve", "rev")
    assert reads.label_read("s")["annotator"] == "b"  # the newest approval
    rejected = reads.decide("s", "b", "reject", "rev", "too late")  # an approved read may be rejected
    assert (rejected["state"], rejected["was"]) == ("rejected", "approved")
    assert reads.label_read("s")["annotator"] == "a"


def test_a_study_teaches_while_the_read_its_label_holds_is_approved(reads):
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.set_holder("s", "a")
    assert not reads.approved("s")
    reads.decide("s", "a", "approve", "rev")
    assert reads.approved("s") and reads.approved_studies() == {"s"}
    reads.saved("s", "b", "final", final=True, approve=False)  # kept beside a's approved label: a's still teaches
    assert reads.approved("s") and reads.approved_studies() == {"s"}
    reads.decide("s", "a", "reject", "rev", "wrong side")
    assert not reads.approved("s") and reads.approved_studies() == set()
    reads.decide("s", "b", "approve", "rev")
    assert not reads.approved("s")  # approved, but the label still holds a's rejected read
    reads.set_holder("s", "b")
    assert reads.approved("s") and reads.approved_studies() == {"s"}
    assert reads.final_readers() == {"s": 2}


def test_before_any_label_is_held_the_newest_final_read_decides(reads):
    reads.saved("t", "a", "final", final=True, approve=False)
    reads.decide("t", "a", "approve", "rev")
    assert reads.approved("t")
    reads.saved("t", "b", "final", final=True, approve=False)  # a datastore from before labels were recorded held
    assert not reads.approved("t") and reads.approved_studies() == set()


def test_a_final_reads_mask_is_kept_and_given_back_as_it_was_saved(reads, tmp_path):
    saved = tmp_path / "label.nii.gz"
    saved.write_bytes(b"\x1f\x8b mask bytes")
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.keep_mask("s", "a", saved, {"label_names": {"liver": 1}, "client_id": "a"})
    with reads.mask_file("s", "a") as kept:
        path, info = kept
        assert path.read_bytes() == saved.read_bytes() and path.name.endswith(".nii.gz")
        assert info == {"label_names": {"liver": 1}}
    assert not path.exists()  # a temporary copy
    with reads.mask_file("s", "nobody") as kept:
        assert kept is None
    assert reads.with_masks("s") == ["a"]
    with pytest.raises(StudyNotFound, match="no final label"):
        reads.keep_mask("s", "b", saved, {})


def test_a_read_saved_again_while_it_was_reviewed_is_not_decided(reads, monkeypatch):
    reads.saved("s", "a", "final", final=True, approve=False)
    seen = reads.read("s", "a")
    reads.saved("s", "a", "final", final=True, approve=False)  # a new version arrives
    monkeypatch.setattr(reads, "read", lambda study, annotator: seen)  # the reviewer looked at the old one
    with pytest.raises(Conflict, match="changed while it was reviewed"):
        reads.decide("s", "a", "approve", "rev")
    monkeypatch.undo()
    assert reads.read("s", "a")["state"] == "submitted"
