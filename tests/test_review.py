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


def test_an_approved_label_is_not_rejected_and_the_newest_submitted_read_is_the_datastores(reads):
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.saved("s", "b", "final", final=True, approve=False)
    assert reads.newest_submitted("s")["annotator"] == "b"
    reads.decide("s", "b", "approve", "rev")
    assert reads.newest_submitted("s")["annotator"] == "a"
    assert reads.decide("s", "b", "approve", "rev")["was"] == "approved"  # approving again changes nothing
    with pytest.raises(Conflict, match="has taught"):
        reads.decide("s", "b", "reject", "rev", "too late")
    assert reads.read("s", "b")["state"] == "approved"


def test_only_the_newest_final_read_decides_whether_a_study_teaches(reads):
    reads.saved("s", "a", "final", final=True, approve=False)
    reads.decide("s", "a", "approve", "rev")
    assert reads.approved("s") and reads.approved_studies() == {"s"}
    reads.saved("s", "b", "final", final=True, approve=False)  # b's label replaces a's in the datastore
    assert not reads.approved("s") and reads.approved_studies() == set()
    reads.decide("s", "b", "reject", "rev", "wrong side")
    assert not reads.approved("s")
    reads.saved("s", "b", "final", final=True, approve=False)
    reads.decide("s", "b", "approve", "rev")
    assert reads.approved("s") and reads.approved_studies() == {"s"}


def test_a_read_saved_again_while_it_was_reviewed_is_not_decided(reads, monkeypatch):
    reads.saved("s", "a", "final", final=True, approve=False)
    seen = reads.read("s", "a")
    reads.saved("s", "a", "final", final=True, approve=False)  # a new version arrives
    monkeypatch.setattr(reads, "read", lambda study, annotator: seen)  # the reviewer looked at the old one
    with pytest.raises(Conflict, match="changed while it was reviewed"):
        reads.decide("s", "a", "approve", "rev")
    monkeypatch.undo()
    assert reads.read("s", "a")["state"] == "submitted"
