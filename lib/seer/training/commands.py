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

    from seer.training.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(
        traces=args.traces, model=args.model, output=args.output, adapter=args.adapter, processor=args.processor,
        max_steps=args.max_steps, epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, min_reward=args.min_reward,
        eval_fraction=args.eval_fraction, resume=args.resume, overwrite=args.overwrite, save_steps=args.save_steps,
        seed=args.seed, max_new_tokens=args.max_new_tokens, gradient_checkpointing=args.gradient_checkpointing,
        progress=not args.no_progress,
    )
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress bar and log lines
        report = finetune(settings, say=lambda m: print(m, file=sys.stderr, flush=True))
    keys = ("output", "steps", "loss_first", "loss_last", "seconds_per_step", "peak_rss_mb", "eval_on")
    summary = {k: report.get(k) for k in keys}
    summary["rows"] = {k: report["rows"][k] for k in ("read", "used", "corrected", "skipped")}
    for when in ("before", "after"):
        summary[when] = {k: report[when][k] for k in ("format_valid_rate", "target_accuracy", "examples")}
    print(json.dumps(summary))
    return 0


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
