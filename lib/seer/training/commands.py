"""Commands that train and measure the SEER model: finetune and evaluate.
"""

from __future__ import annotations

import json
import sys

from seer.errors import SeerError
from seer.settings import settings_from_flags


def cmd_finetune(args) -> int:
    """Train a LoRA adapter on rewarded traces; stdout gets one JSON summary, progress goes to stderr."""
    import contextlib
    import shutil
    from pathlib import Path

    from seer.training.finetune import FinetuneSettings, finetune

    if bool(args.traces) == bool(args.state_db):
        raise SeerError("Give the traces to train on: --traces DIR_OR_JSONL (export-traces' output) or --state-db URL "
                        "(a shared state database), one of the two.")
    traces = args.traces or _export_from_database(args.state_db)
    settings = FinetuneSettings(
        traces=traces, model=args.model, output=args.output, adapter=args.adapter, processor=args.processor,
        max_steps=args.max_steps, epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, min_reward=args.min_reward,
        eval_fraction=args.eval_fraction, resume=args.resume, overwrite=args.overwrite, save_steps=args.save_steps,
        seed=args.seed, max_new_tokens=args.max_new_tokens, gradient_checkpointing=args.gradient_checkpointing,
        progress=not args.no_progress,
    )
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress bar and log lines
            report = finetune(settings, say=lambda m: print(m, file=sys.stderr, flush=True))
        if args.state_db:  # what the adapter was trained on stays beside it
            kept = Path(args.output) / "traces"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.move(traces, kept)
    finally:
        if args.state_db:
            shutil.rmtree(traces, ignore_errors=True)
    keys = ("output", "steps", "loss_first", "loss_last", "seconds_per_step", "peak_rss_mb", "eval_on")
    summary = {k: report.get(k) for k in keys}
    summary["rows"] = {k: report["rows"][k] for k in ("read", "used", "corrected", "skipped")}
    for when in ("before", "after"):
        summary[when] = {k: report[when][k] for k in ("format_valid_rate", "target_accuracy", "examples")}
    print(json.dumps(summary))
    return 0


def _export_from_database(url: str) -> str:
    """export-traces of the shared state database at `url` into a new temporary folder; its path."""
    import shutil
    import tempfile

    from seer.loop import learned
    from seer.loop.export import export_traces, skills_of_all_rounds

    folder = tempfile.mkdtemp(prefix="seer-finetune-traces-")
    try:
        report = export_traces(learned.open_ledger("", url), folder,
                               progress=lambda m: print(m, file=sys.stderr, flush=True),
                               skills=skills_of_all_rounds(learned.open_rounds("", url)))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    print(f"exported {report['rows']} rewarded traces from the state database", file=sys.stderr)
    return folder


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from seer.pipeline import build_pipeline
    from seer.training import evaluate

    cases, problems = evaluate.read_manifest(args.manifest)
    for problem in problems:
        print(f"skipped: {problem['reason']}", file=sys.stderr)
    if not cases:
        raise SeerError(f"No row of {args.manifest} can run ({len(problems)} skipped); see the reasons above.")
    pipeline = build_pipeline(settings_from_flags(args), None)
    total = sum(len(c.requests) for c in cases)
    with tqdm(total=total, desc="evaluate", unit="request", file=sys.stderr, disable=args.no_progress) as bar:
        rows, more = evaluate.run_cases(pipeline, cases, progress=bar.update)
    for problem in more:
        print(f"skipped: {problem['reason']}", file=sys.stderr)
    problems += more
    if not rows:
        raise SeerError(f"No row of {args.manifest} could run ({len(problems)} skipped); see the reasons above.")
    summary = evaluate.summarize(rows)
    paths = evaluate.write_outputs(args.output, summary, rows, problems)
    print(evaluate.table(summary))
    print(f"\n{len(rows)} requests on {len({(r['dataset'], r['case_id']) for r in rows})} cases; "
          f"{len(problems)} row(s) skipped; written {paths['summary']}, {paths['cases']}, {paths['plot']}")
    return 0
