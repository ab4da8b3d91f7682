"""SEER Label command line: argument parsing only. Each command's body is a function in the package it belongs
to (seer.commands, seer.reasoning.commands, seer.loop.commands, seer.training.commands,
seer.active_learning.commands), imported only when that command runs.

  python main.py [serve]  [--studies DIR_OR_DICOMWEB_URL] [--port N] [--host H] [--conf KEY VALUE ...]
  python main.py reason "REQUEST" [--image VOL] [--labels LABELS.json] [--skills BANK.jsonl] [--reasoner NAME]
  python main.py reason --batch FILE.jsonl [...]
  python main.py segment --image VOL --prompt "REQUEST" --output MASK.nii.gz [--backbone NAME] [--atlases DIR ...]
  python main.py sample-data [--dest DIR] [--force]
  python main.py skills list|show ID|diff A B (--studies DIR | --state-db URL) [--json]
  python main.py traces (--studies DIR | --state-db URL) [--study ID] [--json]
  python main.py review list|show STUDY (--studies DIR | --state-db URL) [--json]
  python main.py export-traces (--studies DIR | --state-db URL) --output DIR
  python main.py evaluate MANIFEST.jsonl --output DIR [--reasoner NAME] [--backbone NAME] [--atlases DIR ...]
  python main.py finetune (--traces DIR_OR_JSONL | --state-db URL) --model BASE --output ADAPTER_DIR
                          [--adapter START] [--max-steps N]
  python main.py simulate-al --studies DIR --campaign "A; B" --steps N --output DIR [--strategies seer,random,...]
  python main.py labels check MAP.json [--json]

Bad input exits with code 2 and one sentence on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
STATE_DB_HELP = "a postgresql:// or sqlite:/// URL: read the shared state database instead of the studies folder's files"
if str(REPO / "lib") not in sys.path:
    sys.path.insert(0, str(REPO / "lib"))

from seer.errors import SeerError  # noqa: E402
from seer.settings import DEFAULT_SAMPLE_DATA as DEFAULT_STUDIES  # noqa: E402 - $SEER_SAMPLE_DATA or sample-data/

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 as well; keep one sentence
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="SEER Label: free-text 3D segmentation on MONAI Label.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the MONAI Label server (default)")
    serve.add_argument("--studies", default=str(DEFAULT_STUDIES), help="studies folder or DICOMweb URL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help="app setting")
    serve.set_defaults(command_body="seer.commands:cmd_serve")

    def common(p):
        p.add_argument("--reasoner", default="auto", help="auto | qwen-vl | openai | offline")
        p.add_argument("--model", help="qwen-vl base model folder or hub id (default Qwen/Qwen3-VL-4B-Instruct)")
        p.add_argument("--adapter", help="qwen-vl LoRA adapter folder or hub id (default Ztrura/SEER; 'none')")
        p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--dtype", help="auto | bfloat16 | float16 | float32")
        p.add_argument("--endpoint", help="openai reasoner: base URL, e.g. http://host:8000/v1")
        p.add_argument("--endpoint-model", dest="endpoint_model", help="openai reasoner: model name at the endpoint")
        p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="tokens generated per request")
        p.add_argument("--skills", help="skill bank JSONL (default: the starter skills)")
        p.add_argument("--embeddings", action="store_true",
                       help="also try sentence embeddings when the lexicon finds no target (off by default)")

    reason = sub.add_parser("reason", help="turn a request into a target (JSON per request)")
    reason.add_argument("request", nargs="?", help="the free-text request")
    reason.add_argument("--image", help="volume the request is about (NIfTI)")
    reason.add_argument("--labels", help="label map JSON ({\"1\": \"liver\", ...}) to resolve onto")
    reason.add_argument("--batch", help="JSONL file of {request, image?, labels?} lines")
    common(reason)
    reason.set_defaults(command_body="seer.commands:cmd_reason")

    segment = sub.add_parser("segment", help="segment one volume from a request")
    segment.add_argument("--image", required=True)
    segment.add_argument("--prompt", required=True)
    segment.add_argument("--output", required=True)
    segment.add_argument("--backbone", default="atlas", help="atlas | voxtell | bundle")
    segment.add_argument("--backbone-model", dest="backbone_model", help="VoxTell model folder or MONAI bundle folder")
    segment.add_argument("--backbone-device", dest="backbone_device", help="auto | cpu | cuda:N")
    segment.add_argument("--backbone-dtype", dest="backbone_dtype", help="auto | bfloat16 | float16 | float32")
    segment.add_argument("--sw-batch-size", dest="sw_batch_size", type=int, help="sliding-window patches per pass")
    segment.add_argument("--sw-overlap", dest="sw_overlap", type=float, help="sliding-window overlap")
    segment.add_argument("--voxtell-embeddings", dest="voxtell_embeddings", help="VoxTell text-embedding bank (.npz)")
    segment.add_argument("--atlases", nargs="*", help="extra atlas folders (besides sample-data/atlases)")
    common(segment)
    segment.set_defaults(command_body="seer.commands:cmd_segment")

    download = sub.add_parser("download-weights", help="fetch SEER v1.1, its base (and VoxTell) into the hub cache")
    download.add_argument("--model", default="Qwen/Qwen3-VL-4B-Instruct")
    download.add_argument("--adapter", default="Ztrura/SEER")
    download.add_argument("--voxtell", action="store_true", help="also fetch the VoxTell weights")
    download.set_defaults(command_body="seer.reasoning.commands:cmd_download_weights")

    merge = sub.add_parser("merge-adapter", help="write base + LoRA adapter as merged full weights")
    merge.add_argument("--model", required=True, help="base model folder or hub id")
    merge.add_argument("--adapter", required=True, help="adapter folder or hub id")
    merge.add_argument("--output", required=True, help="folder for the merged model")
    merge.add_argument("--dtype", default="bfloat16", help="bfloat16 | float16 | float32")
    merge.set_defaults(command_body="seer.reasoning.commands:cmd_merge_adapter")

    skills = sub.add_parser("skills", help="the skill bank per round: list | show ID | diff ROUND_A ROUND_B")
    skills.add_argument("action", choices=["list", "show", "diff"])
    skills.add_argument("ids", nargs="*", help="show: a skill id; diff: two round numbers")
    skills.add_argument("--studies", default=str(DEFAULT_STUDIES), help="studies folder the server runs on")
    skills.add_argument("--round", type=int, help="list: this round instead of the active one")
    skills.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    skills.add_argument("--state-db", help=STATE_DB_HELP)
    skills.set_defaults(command_body="seer.loop.commands:cmd_skills")

    review = sub.add_parser("review", help="each annotator's label per study: its review state (list), its "
                            "provenance (show STUDY), the agreement of two reads (agreement [STUDY])")
    review.add_argument("action", choices=["list", "show", "agreement"])
    review.add_argument("study", nargs="?", help="show: the study id; agreement: only this study")
    review.add_argument("--studies", default=str(DEFAULT_STUDIES), help="studies folder the server runs on")
    review.add_argument("--state-db", help=STATE_DB_HELP)
    review.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    review.set_defaults(command_body="seer.review.commands:cmd_review")

    traces = sub.add_parser("traces", help="the trace log with rewards (dice, raw_dice, gain)")
    traces.add_argument("--studies", default=str(DEFAULT_STUDIES))
    traces.add_argument("--study", help="only this study")
    traces.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    traces.add_argument("--state-db", help=STATE_DB_HELP)
    traces.set_defaults(command_body="seer.loop.commands:cmd_traces")

    export = sub.add_parser("export-traces", help="rewarded traces as SEER-Trace rows plus the 8 slice PNGs")
    export.add_argument("--studies", default=str(DEFAULT_STUDIES))
    export.add_argument("--output", required=True, help="folder for seer_traces.jsonl and slices/")
    export.add_argument("--state-db", help=STATE_DB_HELP)
    export.set_defaults(command_body="seer.loop.commands:cmd_export_traces")

    evaluate = sub.add_parser("evaluate", help="Dice robustness across request wordings, SEER against raw")
    evaluate.add_argument("manifest", help="JSONL of cases (or SEER-Trace rows from export-traces)")
    evaluate.add_argument("--output", required=True, help="folder for summary.json, cases.jsonl, dice_spread.png")
    evaluate.add_argument("--backbone", default="atlas", help="atlas | voxtell | bundle")
    evaluate.add_argument("--backbone-model", dest="backbone_model", help="VoxTell model folder or MONAI bundle")
    evaluate.add_argument("--backbone-device", dest="backbone_device", help="auto | cpu | cuda:N")
    evaluate.add_argument("--atlases", nargs="*", help="extra atlas folders (besides sample-data/atlases)")
    evaluate.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    common(evaluate)
    evaluate.set_defaults(command_body="seer.training.commands:cmd_evaluate")

    tune = sub.add_parser("finetune", help="train the SEER LoRA adapter on rewarded traces (export-traces' folder "
                          "or a JSONL of trace rows)")
    tune.add_argument("--traces", help="export-traces' output folder, or a JSONL of trace rows")
    tune.add_argument("--state-db", help="instead of --traces: train on the rewarded traces of this shared state "
                      "database (a URL), exported into OUTPUT/traces")
    tune.add_argument("--model", default="Qwen/Qwen3-VL-4B-Instruct", help="base model folder or hub id")
    tune.add_argument("--output", required=True, help="folder for the adapter, checkpoints/ and finetune.json")
    tune.add_argument("--adapter", help="continue from this LoRA adapter (e.g. the published SEER v1.1)")
    tune.add_argument("--processor", help="processor folder or hub id (default: the base's)")
    tune.add_argument("--max-steps", dest="max_steps", type=int, help="optimizer steps (overrides --epochs)")
    tune.add_argument("--epochs", type=float, default=3.0)
    tune.add_argument("--lr", type=float, default=1e-4)
    tune.add_argument("--lora-r", dest="lora_r", type=int, default=16, help="LoRA rank (a new adapter only)")
    tune.add_argument("--lora-alpha", dest="lora_alpha", type=int, help="LoRA alpha (default 2 x r)")
    tune.add_argument("--batch-size", dest="batch_size", type=int, default=1)
    tune.add_argument("--device", default="auto", help="auto | cpu | cuda (the first visible GPU)")
    tune.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, float32 on CPU) | bfloat16 | float32")
    tune.add_argument("--min-reward", dest="min_reward", type=float, default=0.5,
                      help="Dice a proposal needs to teach (corrected proposals teach their correction)")
    tune.add_argument("--eval-fraction", dest="eval_fraction", type=float, default=0.1,
                      help="rows held out to measure format-valid rate and target accuracy before and after")
    tune.add_argument("--save-steps", dest="save_steps", type=int, default=50, help="steps between checkpoints")
    tune.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=256,
                      help="tokens generated per held-out answer")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true",
                      help="less GPU memory, slower steps")
    tune.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    tune.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    tune.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    tune.set_defaults(command_body="seer.training.commands:cmd_finetune")

    simulate = sub.add_parser("simulate-al", help="the active-learning loop on a labelled folder: Dice on held-out "
                              "cases against the labelling budget, per strategy (AUBC)")
    simulate.add_argument("--studies", required=True, help="folder of cases: <case>/image.nii.gz, labels.nii.gz, "
                          "labels.json")
    simulate.add_argument("--campaign", required=True, help="requests separated by ';', e.g. 'liver; spleen'")
    simulate.add_argument("--steps", type=int, required=True, help="labels to save (the budget)")
    simulate.add_argument("--output", required=True, help="folder for aubc.json and dice_vs_budget.png")
    simulate.add_argument("--strategies", default="seer,random,fg-random,first")
    simulate.add_argument("--held-out", dest="held_out", help="case names held out, comma-separated (default: one "
                          "chosen by the seed)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--atlases", nargs="*", help="atlas folders every strategy starts with (the team's "
                          "earlier labels), besides sample-data/atlases")
    simulate.add_argument("--reasoner", default="offline")
    simulate.add_argument("--no-backbone", dest="no_backbone", action="store_true",
                          help="score with the reasoning parts only (setting al_backbone false)")
    simulate.add_argument("--reads", type=int, default=1, help="simulated annotators per case (default 1); with 2 or "
                          "more each strategy runs without and with review")
    simulate.add_argument("--careless", type=float, default=0.2, help="with --reads 2 or more: the fraction of reads "
                          "that are careless (label eroded or shifted; default 0.2)")
    simulate.add_argument("--no-progress", dest="no_progress", action="store_true")
    simulate.set_defaults(command_body="seer.active_learning.commands:cmd_simulate_al")

    labels = sub.add_parser("labels", help="how a label map is read: labels check MAP.json")
    labels.add_argument("action", choices=["check"])
    labels.add_argument("map", help="label map JSON ({\"1\": \"liver\"} or {\"1\": {\"name\": ..., \"aliases\": [...]}})")
    labels.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    labels.set_defaults(command_body="seer.reasoning.commands:cmd_labels")

    sample = sub.add_parser("sample-data", help="build sample-data/ from packages")
    sample.add_argument("--dest", default=str(DEFAULT_STUDIES))
    sample.add_argument("--force", action="store_true", help="rebuild even if present")
    sample.set_defaults(command_body="seer.commands:cmd_sample_data")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = {"serve", "reason", "segment", "sample-data", "download-weights", "merge-adapter", "skills", "review",
                "traces", "export-traces", "evaluate", "finetune", "simulate-al", "labels", "-h", "--help"}
    if not any(a in commands for a in argv):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command != "download-weights":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        module_name, function_name = args.command_body.split(":")
        return getattr(importlib.import_module(module_name), function_name)(args)
    except SeerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT




if __name__ == "__main__":
    raise SystemExit(main())
