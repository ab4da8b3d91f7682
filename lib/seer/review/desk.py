"""The review desk of one datastore: what a save, an approval or a rejection does to the reads of a study, to the
datastore's final label and to what the study teaches. Framework-free: the app hands in the three actions that touch
MONAI Label's datastore and the annotation loop.

    write_label(study, path, label_info, approved)  make a read's file the study's final label in the datastore
                                                   (approved: it may be stored in the PACS as a SEG)
    teach(study, written)                          the study may teach now: atlases refreshed, rewards queued;
                                                   written: whether the approved read was just written by
                                                   write_label (else the datastore already holds it, or holds
                                                   another server's copy: `write_approved` writes it)
    withdraw(study, reason, by) -> [trace ids]     take back the rewards the study earned; atlases refreshed

With `review` off every final save is approved on save and becomes the label, as without review. With it on:
- a final save is submitted; it becomes the datastore's label unless another annotator's approved read holds it,
  and its agreement with every other final read of the study is computed and kept;
- an approval makes the approved read the label (written back from its kept mask when another read holds it) and
  lets the study teach;
- a rejection of the read that the label holds after it was approved withdraws the rewards the study earned (one
  `withdrawal` row in the trace log) and hands the label to the next read: the newest approved, else the newest
  submitted one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from seer.errors import Conflict
from seer.loop.rewards import label_names_from_info
from seer.review.agreement import read_agreement
from seer.review.label_reads import LabelReads, ReadState

logger = logging.getLogger(__name__)

FINAL = "final"
# the reader of a final label that came without a save through this server (copied into the datastore, a SEG stored
# by another tool, saved before review was on): a reviewer decides on it under this name
DATASTORE_READER = "datastore"


def provenance(annotator: str, traces: list[dict], now: float) -> dict:
    """What a saved label came from, kept in its label info (`seer_provenance`): an id of this save (`read_id`), who
    saved it and when, and for each
    target the SEER request that proposed it (trace id, request, target, reasoner, backbone, skill round, and where
    known the model weights and the atlases used). traces: trace rows, or their summaries with the target's name."""
    user, _, client = annotator.partition("/")
    return {"read_id": uuid.uuid4().hex, "annotator": annotator, "user": user, "client_id": client or None,
            "saved_at": round(now, 3),
            "proposed_by": [{"trace_id": t.get("id"), "request": t.get("request"),
                             "target": _target_name(t.get("target")), "reasoner": t.get("reasoner"),
                             "backbone": t.get("backbone"), "skill_round": t.get("skill_round"), "ts": t.get("ts"),
                             **{k: t[k] for k in ("models", "atlases") if t.get(k)}}
                            for t in traces]}


def _target_name(target) -> str | None:
    return target.get("name") if isinstance(target, dict) else target


def study_reads(reads: LabelReads, study: str) -> dict:
    """Every read of `study` with its provenance (as kept with its mask), the read the label holds, and the agreement
    of each pair of final reads (`review show`)."""
    rows = reads.reads(study)
    kept = reads.kept_info(study)
    for read in rows:
        read["provenance"] = (kept.get(read["annotator"]) or {}).get("seer_provenance")
    holder = reads.holder(study)
    return {"study": study, "label_holds": holder["annotator"] if holder else None, "reads": rows,
            "agreement": reads.agreement(study)}


def label_names(info: dict | None) -> dict[str, int]:
    """{name: value} of a read's label info (`label_names`, or Slicer's `label_info`: the one reader of
    seer.loop.rewards), background left out; {} when it names nothing."""
    return {name: value for value, name in (label_names_from_info(info) or {}).items() if value != 0}


class ReviewDesk:
    def __init__(self, reads: LabelReads, *, review: bool, review_self: bool, min_dice: float,
                 write_label: Callable[[str, Path, dict, bool], None], teach: Callable[[str, bool], None],
                 withdraw: Callable[[str, str, str], list[str]], keep_reads: bool = True):
        """keep_reads: keep each final read's file (and compare reads); the app keeps them when review is on or a
        study has several reads, which is when a read may have to be written back or compared."""
        self.reads = reads
        self.keep_reads = keep_reads
        self.review = review
        self.review_self = review_self
        self.min_dice = min_dice
        self.write_label = write_label
        self.teach = teach
        self.withdraw = withdraw

    # -- saves -----------------------------------------------------------------------------------------------------
    def takes_label(self, study: str, annotator: str, tag: str) -> bool:
        """Whether this save is written to the datastore under `tag`: a draft always (its own tag), a final read
        unless another annotator's approved read holds the study's label (then it is kept beside it)."""
        return tag != FINAL or self.reads.takes_label(study, annotator, approve=not self.review)

    def saved(self, study: str, annotator: str, tag: str, path: str | Path, label_info: dict,
              took_label: bool, compare: bool = True) -> dict:
        """Record a save by `annotator`: its state, and for a final read its kept mask, whether it holds the
        datastore's label, and its agreement with each other final read ({"with", "min_dice", "mean_dice",
        "structures", "disagrees"}). compare False: no agreement yet, `kept` says whether `agreement_of` may
        compute it (the app computes it once the study's lock is released)."""
        final = tag == FINAL
        read = self.reads.saved(study, annotator, tag, final, approve=not self.review)
        if not final:
            return read
        kept = self.keep_reads and self.reads.keep_mask(study, annotator, path, label_info)
        if took_label:
            self.reads.set_holder(study, annotator)
        else:
            read["note"] = ("Kept beside the approved label of this study: it becomes the study's label if a "
                            "reviewer approves it.")
            holder = self.reads.holder(study)
            if holder is not None and holder["annotator"] == annotator:
                # the label held this annotator's approved read, which this save sends back to review: the label
                # goes to the newest approved read (the datastore's file is never a version no read keeps)
                _, written = self.promote(study)
                if self.teaches(study):
                    self.teach(study, written)
        read["kept"] = bool(kept)
        if compare:
            read["agreement"] = self.agreement_of(study, annotator, path, label_info, kept)
        return read

    def agreement_of(self, study: str, annotator: str, path: str | Path, label_info: dict, kept: bool) -> list[dict]:
        """A saved final read's agreement with the study's other reads (`compare`), [] when its file was not kept."""
        return self.compare(study, annotator, Path(path), label_names(label_info)) if kept else []

    def compare(self, study: str, annotator: str, path: Path, names: dict[str, int]) -> list[dict]:
        """Agreement of `annotator`'s read (its file `path`) with every other submitted or approved read of the
        study, kept per pair."""
        out = []
        for other in self.reads.final_reads(study):
            if other["annotator"] == annotator:
                continue
            with self.reads.mask_file(study, other["annotator"]) as kept:
                if kept is None:
                    continue
                try:
                    figures = read_agreement(path, names, kept[0], label_names(kept[1]))
                except Exception as exc:  # noqa: BLE001 - the save stands; the pair says why it has no figures
                    logger.warning("agreement of %s and %s on %s not computed: %s", annotator, other["annotator"],
                                   study, exc)
                    figures = {"structures": {}, "mean_dice": None, "min_dice": None,
                               "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            self.reads.save_agreement(study, annotator, other["annotator"], figures)
            out.append({"with": other["annotator"], **figures, "disagrees": self.disagrees(figures["min_dice"])})
        return out

    def disagrees(self, min_dice: float | None) -> bool:
        return min_dice is not None and min_dice < self.min_dice

    # -- decisions ---------------------------------------------------------------------------------------------------
    def decide(self, study: str, annotator: str, decision: str, reviewer: str, comment: str = "",
               own: bool = False) -> dict:
        """A reviewer's decision (seer.errors with their status for bad input), then what it changes: an approval
        makes the read the study's label and lets the study teach; a rejection of the approved read that holds the
        label withdraws what the study taught (`withdrawn`: the reward trace ids) and gives the label to the next
        read."""
        read = self.reads.decide(study, annotator, decision, reviewer, comment, own=own, allow_own=self.review_self)
        # the effects follow from the state, so the same decision sent again redoes what a failure left undone
        if read["state"] == ReadState.REJECTED and read["was"] == ReadState.APPROVED:
            holder = self.reads.holder(study)
            if holder is not None and holder["annotator"] == annotator:
                read["withdrawn"] = self.withdraw(
                    study, f"the label of {annotator} was rejected after it was approved: {read['comment']}",
                    reviewer)
        _, written = self.promote(study)
        if self.teaches(study):
            self.teach(study, written)
        return read

    def promote(self, study: str) -> tuple[dict | None, bool]:
        """Make the read that should hold the study's label (`LabelReads.label_read`) hold it, writing its kept
        mask into the datastore when another read holds it now. (The read or None, whether it was written.)"""
        target = self.reads.label_read(study)
        if target is None:
            return None, False
        holder = self.reads.holder(study)
        if holder is not None and holder["annotator"] == target["annotator"] and \
                holder["held_at"] == target["submitted_at"]:
            return target, False
        if not self.write_read(study, target):
            return None, False  # a read from before masks were kept: the datastore keeps what it has
        self.reads.set_holder(study, target["annotator"])
        return target, True

    def write_read(self, study: str, read: dict) -> bool:
        """Write `read`'s kept mask as the study's label (write_label); False when no mask is kept for it."""
        with self.reads.mask_file(study, read["annotator"]) as kept:
            if kept is None:
                return False
            self.write_label(study, kept[0], kept[1], read["state"] == ReadState.APPROVED)
        return True

    def approved_read_id(self, study: str) -> str | None:
        """The `read_id` of the provenance kept with the approved read the study's label holds (None: none)."""
        read = self.reads.label_read(study)
        if read is None or read["state"] != ReadState.APPROVED:
            return None
        info = self.reads.kept_info(study).get(read["annotator"]) or {}
        return (info.get("seer_provenance") or {}).get("read_id")

    def write_approved(self, study: str) -> bool:
        """Write the read the study's label holds, when approved, from its kept mask (a server whose own datastore
        copy is another read's, or none: with a PACS, the SEG of the approved read is stored from there)."""
        read = self.reads.label_read(study)
        return read is not None and read["state"] == ReadState.APPROVED and self.write_read(study, read)

    def adopt(self, study: str, path: str | Path, label_info: dict) -> dict:
        """A final label nobody saved through this server (no read of the study holds it) becomes a submitted read
        of DATASTORE_READER, its file kept, so a reviewer can decide on it."""
        self.reads.saved(study, DATASTORE_READER, FINAL, final=True, approve=False)
        self.reads.keep_mask(study, DATASTORE_READER, path, label_info)
        self.reads.set_holder(study, DATASTORE_READER)
        return self.reads.read(study, DATASTORE_READER)

    def from_label_info(self, study: str, status: str, comment: str) -> tuple[str, str, str] | None:
        """The Slicer MONAI Label Reviewer module's status on the final label it shows (the read the datastore's
        label holds) as (annotator, decision, comment): "approved" approves it, "flagged" rejects it. None when it
        changes nothing (approving the approved read again); Conflict when no final read is there to decide."""
        holder = self.reads.holder(study)
        read = self.reads.read(study, holder["annotator"]) if holder else None
        if read is None or read["state"] not in (ReadState.SUBMITTED, ReadState.APPROVED):
            read = self.reads.label_read(study)
        if read is None:
            raise Conflict(f"No submitted label on '{study}' waits for review: nothing to mark {status}.")
        if status == "approved" and read["state"] == ReadState.APPROVED:
            return None
        if status == "approved":
            return read["annotator"], "approve", comment
        return read["annotator"], "reject", comment or "flagged in the Slicer MONAI Label Reviewer module"

    # -- what a reviewer sees -------------------------------------------------------------------------------------------
    def study_review(self, study: str) -> dict:
        """`study_reads` with whether review is on, whether the study teaches and the agreement threshold: GET
        /seer/review/{image}."""
        return {**study_reads(self.reads, study), "review": self.review, "teaches": self.teaches(study),
                "agreement_min_dice": self.min_dice}

    # -- what teaches --------------------------------------------------------------------------------------------------
    def teaches(self, study: str) -> bool:
        """Whether a study's final label may teach (rewards, skill rounds, atlas): always with review off, else while
        the read its label holds is approved (LabelReads.approved)."""
        return not self.review or self.reads.approved(study)

    def teaching(self, labelled: list[str]) -> list[str]:
        """Of the studies with a final label, those that may teach (one query)."""
        if not self.review:
            return labelled
        approved = self.reads.approved_studies()
        return [s for s in labelled if s in approved]

    def status(self) -> dict:
        """For /info: review on or off, labels waiting, and the reads' agreement (pairs, how many disagree)."""
        status: dict = {"on": self.review}
        if self.review:
            status["waiting"] = len(self.reads.queue())
        pairs = self.reads.agreement()
        if pairs:
            dices = sorted(p["min_dice"] for p in pairs if p["min_dice"] is not None)
            status["agreement"] = {
                "pairs": len(pairs), "below_min_dice": sum(self.disagrees(d) for d in dices),
                "min_dice": self.min_dice, "median_min_dice": dices[len(dices) // 2] if dices else None}
        return status
