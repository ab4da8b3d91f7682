"""The command line's commands that run the whole pipeline or the server: serve, reason, segment, sample-data.
main.py parses the arguments; each function here takes that argparse namespace and returns the exit code. Bad
input raises SeerError, which main.py prints as one sentence with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from seer.errors import SeerError
from seer.settings import DEFAULT_SAMPLE_DATA, REPO_ROOT, SeerSettings, settings_from_flags


def _conf_args(values: list[list[str]] | None) -> dict[str, str]:
    return {k: v for k, v in (values or [])}


def cmd_serve(args) -> int:
    conf = _conf_args(args.conf)
    settings = SeerSettings.from_conf(conf)  # fail here, with the sentence, before the server starts
    if settings.state_db:  # a shared state database that cannot be reached: say so now, not after loading models
        from seer.active_learning.study_state import StudyState

        StudyState(settings.state_db).close()
    studies = args.studies
    if not studies.startswith(("http://", "https://")):
        if Path(studies).resolve() == DEFAULT_SAMPLE_DATA.resolve():
            from seer import sample_data

            if not sample_data.is_complete(DEFAULT_SAMPLE_DATA):
                print("Building the sample data (first start only)...", file=sys.stderr)
                sample_data.build(DEFAULT_SAMPLE_DATA, say=lambda m: print(m, file=sys.stderr))
        elif not Path(studies).is_dir():
            raise SeerError(f"The studies folder '{studies}' does not exist; create it or pass another --studies.")
    # MONAI Label creates these app folders when they are missing, racing with a second server started at the same
    # moment from a fresh checkout (FileExistsError); they are created here first, race-free
    for folder in ("model", "lib", "logs", "bin"):
        (REPO_ROOT / "apps" / "seer" / folder).mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(REPO_ROOT / "apps" / "seer"),
        "--studies", studies,
        "--host", args.host,
        "--port", str(args.port),
    ]
    for key, value in conf.items():
        argv += ["--conf", key, value]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT / "lib"), env.get("PYTHONPATH", "")] if p)
    env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "true")
    if settings.auth_realm:  # MONAI Label's token auth reads these when its server module is imported
        env["MONAI_LABEL_AUTH_ENABLE"] = "true"
        env["MONAI_LABEL_AUTH_REALM_URI"] = settings.auth_realm
    print(f"SEER Label on http://{args.host}:{args.port} over {studies}", file=sys.stderr)
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def reason_row(pipeline, request, image, labels, volumes, tables) -> dict:
    """One `reason` output row (the command-line contract's fields) for `request` on the volume at `image` (a path
    or None) resolved onto the label map at `labels` (a path or None); `volumes` (VolumeCache) and `tables` ({path:
    LabelTable}) are shared across a batch. A bad request becomes a `rejected` row, never an exception."""
    from seer.reasoning.targets import LabelTable

    start = time.perf_counter()
    row: dict = {"request": request}
    try:
        volume = volumes.get(image) if image else None
        table = None
        if labels:
            if labels not in tables:
                tables[labels] = LabelTable.from_json(labels)
            table = tables[labels]
        reasoning = pipeline.reason(request, volume, table if table is not None else LabelTable({}))
    except SeerError as exc:
        row.update(evidence=None, rationale=None, answer=None, label=None, label_id=None, rejected=True,
                   reason=exc.message, skill_ids=[], reasoner=pipeline.reasoner.name)
        row.update(latency_s=round(time.perf_counter() - start, 4), format_valid=None, answer_source=None)
        return row
    resolution = reasoning.resolution
    trace = reasoning.trace
    if table is None:  # no vocabulary: only refusals that need none count
        rejected = resolution.kind in ("empty", "nonsense", "out_of_region", "lesion_not_supported")
    else:
        rejected = not resolution.ok
    row.update(
        evidence=trace.evidence,
        rationale=trace.rationale,
        answer=trace.answer,
        label=resolution.entry.name if resolution.ok and table is not None else None,
        label_id=resolution.entry.id if resolution.ok and table is not None else None,
        rejected=rejected,
        reason=resolution.reason if rejected else None,
        skill_ids=trace.skill_ids,
        reasoner=trace.reasoner,
        latency_s=round(time.perf_counter() - start, 4),
        format_valid=trace.format_valid,  # beyond the contract's fields: whether the model kept the SEER format
        answer_source=trace.answer_source,
    )
    return row


def cmd_reason(args) -> int:
    from seer.imaging.volume import VolumeCache
    from seer.pipeline import build_pipeline

    if args.batch and args.request:
        raise SeerError("Give either one REQUEST or --batch FILE.jsonl, not both.")
    if not args.batch and args.request is None:
        raise SeerError('Give a REQUEST to reason about, e.g. main.py reason "rt hip bone pls".')
    pipeline = build_pipeline(settings_from_flags(args), None, with_backbone=False)
    volumes = VolumeCache()
    tables: dict = {}
    if not args.batch:
        if args.image:
            volumes.get(args.image)  # an unreadable image is bad input: exit 2
        if args.labels:
            from seer.reasoning.targets import LabelTable

            tables[args.labels] = LabelTable.from_json(args.labels)
        row = reason_row(pipeline, args.request, args.image, args.labels, volumes, tables)
        if row["evidence"] is None and row["rejected"]:
            raise SeerError(row["reason"])
        print(json.dumps(row, ensure_ascii=False))
        return 0
    path = Path(args.batch)
    if not path.is_file():
        raise SeerError(f"Batch file {path} does not exist.")
    with open(path, encoding="utf-8") as fp:
        for number, line in enumerate(fp, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or "request" not in item:
                    raise ValueError("needs a 'request' field")
            except ValueError as exc:
                raise SeerError(f"{path.name} line {number} is not a JSON object with 'request' ({exc}).") from None
            row = reason_row(
                pipeline, item["request"], item.get("image") or args.image, item.get("labels") or args.labels,
                volumes, tables,
            )
            print(json.dumps(row, ensure_ascii=False), flush=False)
    sys.stdout.flush()
    return 0


def cmd_segment(args) -> int:
    from seer.errors import Refusal
    from seer.imaging.volume import load_volume, write_mask
    from seer.pipeline import build_pipeline

    if not args.output.endswith((".nii", ".nii.gz")):
        raise SeerError(f"--output must end with .nii.gz or .nii, got '{args.output}'.")
    pipeline = build_pipeline(settings_from_flags(args), None)
    volume = load_volume(args.image)
    start = time.perf_counter()
    try:
        outcome = pipeline.run(args.prompt, volume, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except Refusal as refusal:
        raise SeerError(refusal.message) from None
    entry = outcome.entry
    t_write = time.perf_counter()
    write_mask(outcome.mask, volume, args.output, value=entry.id)
    latencies = dict(outcome.latencies, write_s=round(time.perf_counter() - t_write, 4))
    latencies["total_s"] = round(time.perf_counter() - start, 4)
    trace = outcome.reasoning.trace
    print(json.dumps({
        "output": args.output,
        "label": entry.name,
        "label_id": entry.id,
        "voxels": int(outcome.mask.sum()),
        "answer": trace.answer,
        "rationale": trace.rationale,
        "atlases": outcome.details.get("atlases"),
        "latencies": latencies,
    }, ensure_ascii=False))
    return 0


def cmd_sample_data(args) -> int:
    from seer import sample_data

    report = sample_data.build(args.dest, force=args.force, say=lambda m: print(m, file=sys.stderr))
    print(json.dumps(report, indent=1))
    return 0
