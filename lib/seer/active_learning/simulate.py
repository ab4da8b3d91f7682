"""`simulate-al`: the active-learning loop on a labelled folder, the folder's own labels playing the annotator.

Each strategy starts from the same state (no atlas from the folder, only the seed atlases given with `--atlases`;
round-0 skills) and the same seed. A step:
the strategy picks an unlabelled pool case -> SEER proposes every campaign request on it (traced) -> its true label
is "saved" (the case becomes an atlas) -> the proposals are rewarded and skill rounds close as the annotation loop
does. After every step the held-out cases are segmented for every campaign request and the mean Dice is recorded:
the Dice-versus-budget curve. AUBC = the area under that curve over budgets 0..steps (trapezoids), divided by the
number of steps, so it lies in [0, 1].

Strategies: `seer` (scoring method and hand-out of seer.active_learning.strategy), `random`, `fg-random` (random among the
cases whose image evidence puts a campaign target in view; random when none does), `first` (name order).
Registrations are cached in one folder shared by the strategies (keyed by content), so every strategy pays each
(atlas, study) registration at most once.

Several reads per study (`reads` > 1): each picked case is read by that many simulated annotators; a read is
careless with probability `careless` (drawn per case and reader from the seed, so every variant meets the same
careless reads): its label map eroded by two voxels per structure, or shifted by three voxels along one axis. Each
strategy then runs twice: without review the case's label is its newest read, careless or not (what the datastore
keeps); with review (`<strategy>+review`) a reviewer who can tell a careless read approves the first careful one and
rejects the others, and a case with no careful read teaches nothing (it still costs its budget).

Cases: `<folder>/<case>/image.nii.gz`, `labels.nii.gz`, `labels.json` (value -> name), as ../shared/data holds them.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seer.errors import BadRequest, Refusal
from seer.files import text_table, write_atomic
from seer.metrics import dice

STRATEGIES = ("seer", "random", "fg-random", "first")


@dataclass(frozen=True)
class SimCase:
    name: str
    folder: Path
    names: dict[int, str]

    @property
    def image(self) -> Path:
        return self.folder / "image.nii.gz"

    @property
    def labels(self) -> Path:
        return self.folder / "labels.nii.gz"


def read_cases(folder: str | os.PathLike) -> list[SimCase]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BadRequest(f"The folder {folder} does not exist.")
    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if all((sub / f).is_file() for f in ("image.nii.gz", "labels.nii.gz", "labels.json")):
            try:
                names = {int(k): str(v) for k, v in json.loads((sub / "labels.json").read_text()).items()}
            except (ValueError, AttributeError):
                raise BadRequest(f"{sub / 'labels.json'} must map label values to names, e.g. {{\"1\": \"liver\"}}.") \
                    from None
            cases.append(SimCase(sub.name, sub, names))
    if len(cases) < 2:
        raise BadRequest(f"{folder} holds {len(cases)} labelled case(s); simulate-al needs at least 2 (a pool and a "
                         "held-out case), each a folder with image.nii.gz, labels.nii.gz and labels.json.")
    return cases


def split(cases: list[SimCase], held_out: list[str] | None, seed: int) -> tuple[list[SimCase], list[SimCase]]:
    """(pool, held-out): the named held-out cases, else one chosen by the seed."""
    by_name = {c.name: c for c in cases}
    if held_out:
        unknown = [n for n in held_out if n not in by_name]
        if unknown:
            raise BadRequest(f"No case named {', '.join(unknown)}; cases: {', '.join(by_name)}.")
        test = [by_name[n] for n in held_out]
    else:
        test = [random.Random(seed).choice(cases)]
    pool = [c for c in cases if c not in test]
    if not pool:
        raise BadRequest("Every case is held out; leave at least one in the pool.")
    return pool, test


def aubc(curve: list[float]) -> float:
    """Area under the Dice-versus-budget curve (budgets 0..len-1, trapezoids) over the number of steps."""
    if len(curve) < 2:
        return float(curve[0]) if curve else 0.0
    area = sum((curve[i] + curve[i + 1]) / 2 for i in range(len(curve) - 1))
    return float(area / (len(curve) - 1))


def careless_read(case: SimCase, reader: int, seed: int, careless: float) -> str | None:
    """How reader `reader`'s read of `case` is careless ("eroded" or "shifted"), or None for a careful read: drawn
    from (seed, case, reader) alone, so every strategy and variant meets the same careless reads."""
    draw = random.Random(f"{seed}/{case.name}/{reader}")
    if draw.random() >= careless:
        return None
    return draw.choice(["eroded", "shifted"])


def write_careless(case: SimCase, how: str, reader: int, folder: Path) -> SimCase:
    """A copy of `case` whose label map is damaged as `how` says (each structure eroded by two voxels, or the map
    shifted by three voxels along the axis the reader's number picks)."""
    import nibabel as nib
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(case.labels))
    data = np.asarray(image.dataobj).astype(np.int32)
    if how == "eroded":
        damaged = np.zeros_like(data)
        for value in np.unique(data[data > 0]):
            damaged[ndimage.binary_erosion(data == value, iterations=2)] = value
    else:
        damaged = np.roll(data, 3, axis=reader % 3)
    nib.save(nib.Nifti1Image(damaged.astype(np.uint16), image.affine), str(folder / "labels.nii.gz"))
    (folder / "image.nii.gz").symlink_to(case.image.resolve())
    (folder / "labels.json").write_text(json.dumps({str(k): v for k, v in case.names.items()}))
    return SimCase(case.name, folder, case.names)


class _Run:
    """One strategy's loop over its own state folder."""

    def __init__(self, strategy: str, pool: list[SimCase], test: list[SimCase], campaign: list[str], conf: dict,
                 workdir: Path, shared_registrations: Path, seed: int, reads: int = 1, careless: float = 0.0,
                 review: bool = False):
        from seer.active_learning.scoring import ScoringSettings, StudyScorer
        from seer.active_learning.strategy import ActiveLearning, recent_traces
        from seer.active_learning.study_state import StudyState
        from seer.imaging.volume import VolumeCache
        from seer.loop.annotation_loop import AnnotationLoop
        from seer.loop.rewards import Rewarder, TraceLedger
        from seer.pipeline import build_pipeline
        from seer.settings import SeerSettings

        self.strategy, self.pool, self.test, self.campaign = strategy, pool, test, campaign
        self.rng = random.Random(seed)
        self.seed, self.reads, self.careless, self.review = seed, reads, careless, review
        self.labels_of: dict[str, SimCase] = {}  # case -> the read its label holds (the case itself when careful)
        self.workdir = workdir
        self.atlas_dir = workdir / "atlases"
        self.atlas_dir.mkdir(parents=True)
        state_dir = workdir / ".seer"
        state_dir.mkdir()
        (state_dir / "registrations").symlink_to(shared_registrations, target_is_directory=True)
        seed_atlases = [a for a in str(conf.get("atlases") or "").split(os.pathsep) if a]
        settings = SeerSettings.from_conf({**conf, "atlases": os.pathsep.join([*seed_atlases, str(self.atlas_dir)]),
                                           "campaign": ";".join(campaign)})
        self.volumes = VolumeCache()
        self.pipeline = build_pipeline(settings, state_dir, volumes=self.volumes)
        self.revealed: list[str] = []
        by_name = {c.name: c for c in pool}
        self.by_name = by_name
        self.state = StudyState.for_datastore(None, state_dir)
        scorer = StudyScorer(self.pipeline, ScoringSettings.from_settings(settings))
        self.scorer = scorer
        self.al = ActiveLearning(
            self.state, scorer,
            list_studies=lambda: ({c.name: "1" for c in pool}, list(self.revealed)),
            load_volume=lambda name: self.volumes.get(str(by_name[name].image), name),
            trace_rows=lambda: recent_traces(self.pipeline.trace_log),
            campaign=campaign, lease_s=1e9,
        )
        ledger = TraceLedger(self.pipeline.trace_log)
        rounds = self.pipeline.skill_rounds
        rewarder = Rewarder(self.pipeline.backbone, self.pipeline.context, self.volumes.get, rounds.skill_tag,
                            settings.dataset)
        self.loop = AnnotationLoop(ledger, rounds, rewarder, final_label=self._final_label,
                                   labelled=lambda: list(self.revealed),
                                   on_round=lambda number, bank: setattr(self.pipeline, "skill_bank", bank))
        self.proposals = workdir / "proposals"
        self.proposals.mkdir()

    def _final_label(self, name: str):
        from seer.loop.rewards import FinalLabel

        case = self.labels_of.get(name)
        return FinalLabel.of(name, str(case.image), str(case.labels), case.names) if case else None

    def pick(self) -> tuple[str, str]:
        """(case name, how it was picked)."""
        remaining = [c.name for c in self.pool if c.name not in self.revealed]
        if self.strategy == "first":
            return sorted(remaining)[0], "first"
        if self.strategy == "random":
            return self.rng.choice(remaining), "random"
        if self.strategy == "fg-random":
            in_view = [n for n in remaining
                       if self.scorer.in_view(self.volumes.get(str(self.by_name[n].image), n), self.campaign)]
            return self.rng.choice(in_view or remaining), "foreground-aware random" if in_view else "random"
        self.al.sync()
        self.al.run_scoring(say=lambda message: None)
        got = self.state.hand_out("simulation", 1e9)
        return got.study, got.selection

    def propose(self, name: str) -> None:
        """Every campaign request on the picked case, traced with its proposal (what an annotator's requests do)."""
        from seer.imaging.volume import write_mask

        case = self.by_name[name]
        volume = self.volumes.get(str(case.image), name)
        for n, request in enumerate(self.campaign):
            try:
                outcome = self.pipeline.run(request, volume, progress=lambda message: None)
            except Refusal as refusal:
                self.pipeline.record(refusal.details.get("reasoning"), name, raw=request, refusal=refusal)
                continue
            path = self.proposals / f"{name}-{n}.nii.gz"
            write_mask(outcome.mask, volume, path, value=outcome.entry.id)
            self.pipeline.record(outcome.reasoning, name, proposal=path, voxels=int(outcome.mask.sum()))

    def reveal(self, name: str) -> dict:
        """The annotators save their reads: the case's label (the newest read, or with review the first careful
        one) makes it an atlas and rewards its proposals. Returns what the reads were and which one taught."""
        case = self.by_name[name]
        kinds = [careless_read(case, reader, self.seed, self.careless) for reader in range(self.reads)]
        reads = [case if how is None else write_careless(case, how, reader, self.workdir / "reads" / f"{name}-{reader}")
                 for reader, how in enumerate(kinds)]
        # with review: the first careful read is approved; without: the newest read is the label
        careful = next((i for i, how in enumerate(kinds) if how is None), None)
        taught = careful if self.review else len(reads) - 1
        self.state.mark_labelled(name)
        if taught is not None:
            self.labels_of[name] = reads[taught]
            (self.atlas_dir / name).symlink_to(reads[taught].folder.resolve(), target_is_directory=True)
            self.revealed.append(name)
            self.pipeline.backbone.refresh()
            self.loop.process(name)
            self.loop.close_rounds()
        return {"reads": [how or "careful" for how in kinds], "taught": taught}

    def held_out_dice(self) -> float:
        """Mean Dice over held-out cases x campaign requests (a refusal, or a target the case lacks, counts 0)."""
        from seer.imaging.volume import load_labels
        from seer.reasoning.targets import LabelTable, Resolver

        scores = []
        for case in self.test:
            volume = self.volumes.get(str(case.image), case.name)
            labels, _ = load_labels(str(case.labels), case.name)
            resolver = Resolver(LabelTable(case.names))
            for request in self.campaign:
                truth = resolver.resolve(request)
                if not truth.ok:
                    continue  # the held-out case does not hold this target: not part of the measure
                reference = labels == truth.entry.id
                try:
                    outcome = self.pipeline.run(request, volume, progress=lambda message: None)
                    scores.append(dice(outcome.mask, reference))
                except Refusal:
                    scores.append(0.0)
        return float(np.mean(scores)) if scores else 0.0


def simulate(cases: list[SimCase], campaign: list[str], steps: int, strategies: list[str], workdir: Path,
             conf: dict | None = None, held_out: list[str] | None = None, seed: int = 0,
             progress: Callable[[str], None] | None = None, reads: int = 1, careless: float = 0.0) -> dict:
    """Run every strategy (with reads > 1, each without and with review); returns {"strategies": {name: {"curve",
    "aubc", "picks"}}, "pool", "held_out", ...}."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise BadRequest(f"Unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}.")
    if not campaign:
        raise BadRequest("Give the campaign: --campaign 'left hip bone; right hip bone; sacrum'.")
    pool, test = split(cases, held_out, seed)
    if not 1 <= steps <= len(pool):
        raise BadRequest(f"--steps must be between 1 and the pool size ({len(pool)} cases), got {steps}.")
    if not 1 <= reads <= 5:
        raise BadRequest(f"--reads must be between 1 and 5, got {reads}.")
    if not 0 <= careless <= 1:
        raise BadRequest(f"--careless must be a fraction between 0 and 1, got {careless:g}.")
    careless = careless if reads > 1 else 0.0  # one read per case: the case's own label, as without --reads
    say = progress or (lambda message: None)
    shared = workdir / "registrations"
    shared.mkdir(parents=True, exist_ok=True)
    result: dict = {"campaign": campaign, "steps": steps, "seed": seed, "pool": [c.name for c in pool],
                    "held_out": [c.name for c in test], "reads": reads, "careless": careless, "strategies": {}}
    variants = [(s, review) for s in strategies for review in ((False, True) if reads > 1 else (False,))]
    for strategy, review in variants:
        name_of = strategy + ("+review" if review else "")
        run = _Run(strategy, pool, test, campaign, dict(conf or {}), workdir / name_of, shared, seed, reads,
                   careless, review)
        curve = [run.held_out_dice()]
        picks = []
        say(f"{name_of}: budget 0, held-out Dice {curve[0]:.3f}")
        for step in range(1, steps + 1):
            name, how = run.pick()
            run.propose(name)
            revealed = run.reveal(name)
            curve.append(run.held_out_dice())
            picks.append({"case": name, "how": how, **(revealed if reads > 1 else {})})
            say(f"{name_of}: step {step}/{steps} labelled {name} ({how}); held-out Dice {curve[-1]:.3f}")
        run.state.close()
        result["strategies"][name_of] = {"curve": [round(v, 4) for v in curve], "aubc": round(aubc(curve), 4),
                                          "final_dice": round(curve[-1], 4), "picks": picks}
    return result


def write_outputs(result: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "aubc.json", "plot": out / "dice_vs_budget.png"}
    write_atomic(paths["json"], json.dumps(result, indent=1).encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in result["strategies"].items():
        ax.plot(range(len(run["curve"])), run["curve"], marker="o", label=f"{name} (AUBC {run['aubc']:.3f})")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("labelled studies (budget)")
    ax.set_ylabel("mean Dice on held-out cases")
    ax.set_title(f"{'; '.join(result['campaign'])} - held out: {', '.join(result['held_out'])}", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=110)
    plt.close(fig)
    return paths


def table(result: dict) -> str:
    rows = [{"strategy": name, "aubc": run["aubc"], "final": run["final_dice"],
             "picks": ", ".join(p["case"] for p in run["picks"])} for name, run in result["strategies"].items()]
    return text_table(rows, [("strategy", "strategy"), ("aubc", "AUBC"), ("final", "final Dice"),
                             ("picks", "labelled, in order")])
