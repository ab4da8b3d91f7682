"""`finetune` on this CPU with a tiny real Qwen3-VL (2 layers, 64 wide, real Qwen vocabulary) built here: seconds per
step and peak RSS of the Trainer path (`seer.training.finetune.finetune`: transformers' Trainer + peft LoRA r 16 on the
language model's projections) against a plain LoRA loop (same model, adapter, examples and collator; AdamW; no
Trainer) measured in the same run. Two processors: the contract's 448 x 448 views (196 tokens per view) and the
tests' 128 x 128 (16 per view). Each part runs in its own process, so each peak RSS is its own.

Usage: python bench/bench_finetune.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import REPO, need_sample_data, save, table

sys.path.insert(0, str(REPO / "tests"))

LESSONS = [("lt hippo pls", "mni152_t1.nii.gz", "left hippocampus"),
           ("the one we discussed", "colin27_t1.nii.gz", "right amygdala")]


def plain_loop(base: str, rows: str, steps: int) -> dict:
    """The baseline: the same model, LoRA, examples and batches, stepped by hand."""
    import torch

    from seer.training.finetune import FinetuneSettings, TraceDataset, collate, load_for_training, read_examples

    examples, _ = read_examples(rows, 0.5)
    settings = FinetuneSettings(traces=rows, model=base, output="-", device="cpu", lr=2e-3)
    model, processor, _, _, _ = load_for_training(settings)
    data = TraceDataset(examples, processor)
    batch_of = collate(processor.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        batch = batch_of([data[step % len(data)]])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    seconds = time.perf_counter() - start
    tokens = len(data[0]["input_ids"])
    return {"seconds_per_step": seconds / steps, "loss_first": losses[0], "loss_last": losses[-1], "tokens": tokens}


def trainer_path(base: str, rows: str, steps: int, output: str) -> dict:
    from seer.training.finetune import FinetuneSettings, finetune

    report = finetune(FinetuneSettings(traces=rows, model=base, output=output, max_steps=steps, lr=2e-3,
                                       eval_fraction=0, save_steps=10_000, max_new_tokens=8, device="cpu",
                                       progress=False, overwrite=True))
    return {"seconds_per_step": report["seconds_per_step"], "loss_first": report["loss_first"],
            "loss_last": report["loss_last"]}


def child(args) -> None:
    result = (plain_loop(args.base, args.rows, args.steps) if args.part == "plain"
              else trainer_path(args.base, args.rows, args.steps, args.output))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_part(part: str, base: Path, rows: Path, steps: int, output: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--part", part, "--base", str(base), "--rows", str(rows),
                           "--steps", str(steps), "--output", str(output)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--part", choices=["plain", "trainer"])
    parser.add_argument("--base")
    parser.add_argument("--rows")
    parser.add_argument("--output")
    args = parser.parse_args()
    if args.part:
        return child(args)

    from tiny_models import build_tiny_qwen

    sample = need_sample_data()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = tmp / "rows.jsonl"
        rows.write_text("".join(json.dumps({
            "image": str(sample / study), "raw_prompt": raw, "dice": 0.9,
            "trace": f"<evidence>T1 brain MRI.</evidence><rationale>The request means the {answer}.</rationale>"
                     f"<answer>{answer}</answer>"}) + "\n" for raw, study, answer in LESSONS))
        for views, edge in (("448 x 448 (contract)", None), ("128 x 128 (tests)", 128)):
            base = build_tiny_qwen(tmp / f"base-{edge}", image_edge=edge)
            plain = run_part("plain", base, rows, args.steps, tmp / "unused")
            trainer = run_part("trainer", base, rows, args.steps, tmp / f"adapter-{edge}")
            results.append({
                "views": views, "tokens": plain["tokens"],
                "plain_s_step": round(plain["seconds_per_step"], 3),
                "trainer_s_step": round(trainer["seconds_per_step"], 3),
                "time_ratio": round(trainer["seconds_per_step"] / plain["seconds_per_step"], 2),
                "plain_rss_mb": round(plain["peak_rss_mb"]), "trainer_rss_mb": round(trainer["peak_rss_mb"]),
                "rss_ratio": round(trainer["peak_rss_mb"] / plain["peak_rss_mb"], 2),
                "trainer_loss": f"{trainer['loss_first']:.2f} -> {trainer['loss_last']:.2f}",
                "plain_loss": f"{plain['loss_first']:.2f} -> {plain['loss_last']:.2f}",
            })
    print(f"finetune on CPU, tiny Qwen3-VL, {args.steps} steps of batch 1; ratios: Trainer path / plain loop")
    print(table(results, ["views", "tokens", "plain_s_step", "trainer_s_step", "time_ratio", "plain_rss_mb",
                          "trainer_rss_mb", "rss_ratio", "plain_loss", "trainer_loss"]))
    save("bench_finetune", {"steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
