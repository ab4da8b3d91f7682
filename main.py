"""SEER Label command line.

  python main.py [serve]  [--studies DIR_OR_DICOMWEB_URL] [--port N] [--host H] [--conf KEY VALUE ...]
  python main.py reason "REQUEST" [--image VOL] [--labels LABELS.json] [--skills BANK.jsonl] [--reasoner NAME]
  python main.py reason --batch FILE.jsonl [...]
  python main.py segment --image VOL --prompt "REQUEST" --output MASK.nii.gz [--backbone NAME] [--atlases DIR ...]
  python main.py sample-data [--dest DIR] [--force]
  python main.py skills list|show ID|diff A B --studies DIR [--json]
  python main.py traces --studies DIR [--study ID] [--json]
  python main.py export-traces --studies DIR --output DIR
  python main.py evaluate MANIFEST.jsonl --output DIR [--reasoner NAME] [--backbone NAME] [--atlases DIR ...]
  python main.py finetune --traces DIR_OR_JSONL --model BASE --output ADAPTER_DIR [--adapter START] [--max-steps N]
  python main.py simulate-al --studies DIR --campaign "A; B" --steps N --output DIR [--strategies seer,random,...]

Bad input exits with code 2 and one sentence on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
if str(REPO / "lib") not in sys.path:
    sys.path.insert(0, str(REPO / "lib"))

from seer.errors import SeerError  # noqa: E402

EXIT_BAD_INPUT = 2
from seer.settings import DEFAULT_SAMPLE_DATA as DEFAULT_STUDIES  # noqa: E402 - $SEER_SAMPLE_DATA or sample-data/


def _conf_args(values: list[list[str]] | None) -> dict[str, str]:
    return {k: v for k, v in (values or [])}


# -- serve -------------------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from seer.settings import SeerSettings

    conf = _conf_args(args.conf)
    settings = SeerSettings.from_conf(conf)  # fail here, with the sentence, before the server starts
    if settings.state_db:  # a shared state database that cannot be reached: say so now, not after loading models
        from seer.study_state import StudyState

        StudyState(settings.state_db).close()
    studies = args.studies
    if not studies.startswith(("http://", "https://")):
        if Path(studies).resolve() == DEFAULT_STUDIES.resolve():
            from seer import sample_data

            if not sample_data.is_complete(DEFAULT_STUDIES):
                print("Building the sample data (first start only)...", file=sys.stderr)
                sample_data.build(DEFAULT_STUDIES, say=lambda m: print(m, file=sys.stderr))
        elif not Path(studies).is_dir():
            raise SeerError(f"The studies folder '{studies}' does not exist; create it or pass another --studies.")
    argv = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(REPO / "apps" / "seer"),
        "--studies", studies,
        "--host", args.host,
        "--port", str(args.port),
    ]
    for key, value in conf.items():
        argv += ["--conf", key, value]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "lib"), env.get("PYTHONPATH", "")] if p)
    env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "true")
    if settings.auth_realm:  # MONAI Label's token auth reads these when its server module is imported
        env["MONAI_LABEL_AUTH_ENABLE"] = "true"
        env["MONAI_LABEL_AUTH_REALM_URI"] = settings.auth_realm
    print(f"SEER Label on http://{args.host}:{args.port} over {studies}", file=sys.stderr)
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached


# -- reason ------------------------------------------------------------------------------------------------------
def _settings_from_args(args: argparse.Namespace):
    from seer.settings import SeerSettings

    conf = {"reasoner": args.reasoner}
    for flag in ("model", "adapter", "device", "dtype", "endpoint", "endpoint_model", "max_new_tokens",
                 "backbone_model", "backbone_device", "backbone_dtype", "sw_batch_size", "sw_overlap",
                 "voxtell_embeddings"):
        value = getattr(args, flag, None)
        if value is not None:
            conf[flag] = str(value)
    if getattr(args, "skills", None):
        conf["skills"] = args.skills
    if getattr(args, "embeddings", False):
        conf["embeddings"] = "true"
    if getattr(args, "backbone", None):
        conf["backbone"] = args.backbone
    if getattr(args, "atlases", None):
        conf["atlases"] = os.pathsep.join(args.atlases)
    return SeerSettings.from_conf(conf)


def _reason_row(pipeline, request, image, labels, volumes, tables) -> dict:
    from seer.targets import LabelTable

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


def cmd_reason(args: argparse.Namespace) -> int:
    from seer.pipeline import build_pipeline
    from seer.volume import VolumeCache

    if args.batch and args.request:
        raise SeerError("Give either one REQUEST or --batch FILE.jsonl, not both.")
    if not args.batch and args.request is None:
        raise SeerError('Give a REQUEST to reason about, e.g. main.py reason "rt hip bone pls".')
    pipeline = build_pipeline(_settings_from_args(args), None, with_backbone=False)
    volumes = VolumeCache()
    tables: dict = {}
    if not args.batch:
        if args.image:
            volumes.get(args.image)  # an unreadable image is bad input: exit 2
        if args.labels:
            from seer.targets import LabelTable

            tables[args.labels] = LabelTable.from_json(args.labels)
        row = _reason_row(pipeline, args.request, args.image, args.labels, volumes, tables)
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
            row = _reason_row(
                pipeline, item["request"], item.get("image") or args.image, item.get("labels") or args.labels,
                volumes, tables,
            )
            print(json.dumps(row, ensure_ascii=False), flush=False)
    sys.stdout.flush()
    return 0


# -- segment -----------------------------------------------------------------------------------------------------
def cmd_segment(args: argparse.Namespace) -> int:
    from seer.errors import Refusal
    from seer.pipeline import build_pipeline
    from seer.volume import load_volume, write_mask

    if not args.output.endswith((".nii", ".nii.gz")):
        raise SeerError(f"--output must end with .nii.gz or .nii, got '{args.output}'.")
    pipeline = build_pipeline(_settings_from_args(args), None)
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


# -- weights -----------------------------------------------------------------------------------------------------
VOXTELL_REPO = "mrokuss/VoxTell"


def cmd_download_weights(args: argparse.Namespace) -> int:
    """Needs internet; HF_HUB_OFFLINE is not set for this command."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise SeerError("huggingface_hub is not installed; run make setup first.") from None
    repos = [args.model, args.adapter] + ([VOXTELL_REPO] if args.voxtell else [])
    for repo in repos:
        print(f"downloading {repo} ...", file=sys.stderr, flush=True)
        try:
            path = snapshot_download(repo)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SeerError(
                f"Could not download {repo} from the Hugging Face Hub ({first}). This machine may have no internet "
                "access; download on another machine and copy the folder, then pass it with --model / --adapter."
            ) from None
        print(json.dumps({"repo": repo, "path": path}))
    return 0


def cmd_merge_adapter(args: argparse.Namespace) -> int:
    from seer.reasoners.qwen_vl import merge_adapter

    try:
        out = merge_adapter(args.model, args.adapter, args.output, dtype=args.dtype)
    except (OSError, ValueError) as exc:
        raise SeerError(f"Could not merge {args.adapter} into {args.model}: {str(exc).splitlines()[0][:200]}") from None
    print(json.dumps({"output": str(out)}))
    return 0


# -- sample-data -------------------------------------------------------------------------------------------------
def cmd_sample_data(args: argparse.Namespace) -> int:
    from seer import sample_data

    report = sample_data.build(args.dest, force=args.force, say=lambda m: print(m, file=sys.stderr))
    print(json.dumps(report, indent=1))
    return 0


# -- what the annotation loop learned --------------------------------------------------------------------------------
def cmd_skills(args: argparse.Namespace) -> int:
    from seer import learned
    from seer.files import text_table

    rounds = learned.open_rounds(args.studies)
    if args.action == "list":
        report = learned.list_skills(rounds, learned.open_ledger(args.studies), args.round)
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
            return 0
        print(f"skill round {report['listed_round']} (active: {report['round']}): {report['size']} skills, "
              f"{report['rewards']} rewards so far")
        print(text_table(report["skills"], ["skill_id", "tag", "canonical", "origin", "created_round", "uses", "utility",
                                        "dice_gain"]))
        return 0
    if args.action == "show":
        if len(args.ids) != 1:
            raise SeerError("Give one skill id: main.py skills show SKILL_ID --studies DIR.")
        skill = learned.show_skill(rounds, args.ids[0])
        if args.json:
            print(json.dumps(skill, ensure_ascii=False))
            return 0
        for key in ("skill_id", "tag", "canonical", "aliases", "content", "origin", "created_round", "uses",
                    "utility", "dice_gain", "score_hint", "gain_sum", "drop_sum", "studies", "fate"):
            print(f"{key:>13}: {skill[key]}")
        print("   provenance:")
        for item in skill["provenance"]:
            print(f"      round {item.get('round')} {item.get('how')}: {item.get('study')} '{item.get('request')}' "
                  f"Dice {item.get('dice')} gain {item.get('gain')}")
        return 0
    if len(args.ids) != 2 or not all(str(i).isdigit() for i in args.ids):
        raise SeerError("Give two round numbers: main.py skills diff ROUND_A ROUND_B --studies DIR.")
    diff = learned.diff_rounds(rounds, int(args.ids[0]), int(args.ids[1]))
    if args.json:
        print(json.dumps(diff, ensure_ascii=False))
        return 0
    print(f"rounds {diff['from']} -> {diff['to']}: {diff['size'][0]} -> {diff['size'][1]} skills")
    for item in diff["added"]:
        print(f"  + {item['skill_id']} {item['tag']} '{item['canonical']}' aliases {item['aliases']}")
    for item in diff["removed"]:
        print(f"  - {item['skill_id']} {item['tag']} '{item['canonical']}': {item['why']}")
    for item in diff["changed"]:
        changes = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in item.items() if isinstance(v, list) and
                            k != "aliases_added")
        extra = f"; aliases + {item['aliases_added']}" if item["aliases_added"] else ""
        print(f"  ~ {item['skill_id']} '{item['canonical']}': {changes}{extra}")
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    from seer import learned
    from seer.files import text_table

    ledger = learned.open_ledger(args.studies)
    rows = learned.trace_rows(ledger, args.study)
    if args.json:
        rounds = learned.open_rounds(args.studies)
        print(json.dumps({"round": rounds.active()[0], "rewards": ledger.reward_count(), "traces": rows},
                         ensure_ascii=False))
        return 0
    shown = [dict(r, request=str(r["request"])[:40]) for r in rows]
    print(text_table(shown, ["study", "request", "target", "reward_status", "dice", "raw_dice", "gain"]))
    return 0


def cmd_export_traces(args: argparse.Namespace) -> int:
    from seer import learned
    from seer.export import export_traces, skills_of_all_rounds

    report = export_traces(learned.open_ledger(args.studies), args.output,
                           progress=lambda m: print(m, file=sys.stderr) if args.verbose else None,
                           skills=skills_of_all_rounds(learned.open_rounds(args.studies)))
    for item in report["skipped"]:
        print(f"skipped {item['trace_id']}: {item['reason']}", file=sys.stderr)
    print(json.dumps(report))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Train a LoRA adapter on rewarded traces; stdout gets one JSON summary, progress goes to stderr."""
    import contextlib

    from seer.finetune import FinetuneSettings, finetune

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seer import evaluate
    from seer.pipeline import build_pipeline

    cases, problems = evaluate.read_manifest(args.manifest)
    for problem in problems:
        print(f"skipped: {problem['reason']}", file=sys.stderr)
    if not cases:
        raise SeerError(f"No row of {args.manifest} can run ({len(problems)} skipped); see the reasons above.")
    pipeline = build_pipeline(_settings_from_args(args), None)
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


def cmd_simulate_al(args: argparse.Namespace) -> int:
    import tempfile

    from seer import simulate_al
    from seer.settings import SeerSettings, split_requests

    cases = simulate_al.read_cases(args.studies)
    campaign = split_requests(args.campaign)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    conf = {"reasoner": args.reasoner or "offline", "al_backbone": str(not args.no_backbone).lower(),
            "atlases": os.pathsep.join(args.atlases or [])}
    SeerSettings.from_conf(conf)
    held_out = [n.strip() for n in args.held_out.split(",") if n.strip()] if args.held_out else None
    with tempfile.TemporaryDirectory(prefix="seer-simulate-") as work:
        result = simulate_al.simulate(
            cases, campaign, args.steps, strategies, Path(work), conf=conf, held_out=held_out, seed=args.seed,
            progress=None if args.no_progress else (lambda message: print(message, file=sys.stderr, flush=True)),
        )
    paths = simulate_al.write_outputs(result, args.output)
    print(simulate_al.table(result))
    print(f"\npool {len(result['pool'])} cases, held out: {', '.join(result['held_out'])}; written {paths['json']}, "
          f"{paths['plot']}")
    return 0


# -- parser ------------------------------------------------------------------------------------------------------
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
    serve.set_defaults(func=cmd_serve)

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
    reason.set_defaults(func=cmd_reason)

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
    segment.set_defaults(func=cmd_segment)

    download = sub.add_parser("download-weights", help="fetch SEER v1.1, its base (and VoxTell) into the hub cache")
    download.add_argument("--model", default="Qwen/Qwen3-VL-4B-Instruct")
    download.add_argument("--adapter", default="Ztrura/SEER")
    download.add_argument("--voxtell", action="store_true", help="also fetch the VoxTell weights")
    download.set_defaults(func=cmd_download_weights)

    merge = sub.add_parser("merge-adapter", help="write base + LoRA adapter as merged full weights")
    merge.add_argument("--model", required=True, help="base model folder or hub id")
    merge.add_argument("--adapter", required=True, help="adapter folder or hub id")
    merge.add_argument("--output", required=True, help="folder for the merged model")
    merge.add_argument("--dtype", default="bfloat16", help="bfloat16 | float16 | float32")
    merge.set_defaults(func=cmd_merge_adapter)

    skills = sub.add_parser("skills", help="the skill bank per round: list | show ID | diff ROUND_A ROUND_B")
    skills.add_argument("action", choices=["list", "show", "diff"])
    skills.add_argument("ids", nargs="*", help="show: a skill id; diff: two round numbers")
    skills.add_argument("--studies", default=str(DEFAULT_STUDIES), help="studies folder the server runs on")
    skills.add_argument("--round", type=int, help="list: this round instead of the active one")
    skills.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    skills.set_defaults(func=cmd_skills)

    traces = sub.add_parser("traces", help="the trace log with rewards (dice, raw_dice, gain)")
    traces.add_argument("--studies", default=str(DEFAULT_STUDIES))
    traces.add_argument("--study", help="only this study")
    traces.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    traces.set_defaults(func=cmd_traces)

    export = sub.add_parser("export-traces", help="rewarded traces as SEER-Trace rows plus the 8 slice PNGs")
    export.add_argument("--studies", default=str(DEFAULT_STUDIES))
    export.add_argument("--output", required=True, help="folder for seer_traces.jsonl and slices/")
    export.set_defaults(func=cmd_export_traces)

    evaluate = sub.add_parser("evaluate", help="Dice robustness across request wordings, SEER against raw")
    evaluate.add_argument("manifest", help="JSONL of cases (or SEER-Trace rows from export-traces)")
    evaluate.add_argument("--output", required=True, help="folder for summary.json, cases.jsonl, dice_spread.png")
    evaluate.add_argument("--backbone", default="atlas", help="atlas | voxtell | bundle")
    evaluate.add_argument("--backbone-model", dest="backbone_model", help="VoxTell model folder or MONAI bundle")
    evaluate.add_argument("--backbone-device", dest="backbone_device", help="auto | cpu | cuda:N")
    evaluate.add_argument("--atlases", nargs="*", help="extra atlas folders (besides sample-data/atlases)")
    evaluate.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    common(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    tune = sub.add_parser("finetune", help="train the SEER LoRA adapter on rewarded traces (export-traces' folder "
                          "or a JSONL of trace rows)")
    tune.add_argument("--traces", required=True, help="export-traces' output folder, or a JSONL of trace rows")
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
    tune.set_defaults(func=cmd_finetune)

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
    simulate.add_argument("--no-progress", dest="no_progress", action="store_true")
    simulate.set_defaults(func=cmd_simulate_al)

    sample = sub.add_parser("sample-data", help="build sample-data/ from packages")
    sample.add_argument("--dest", default=str(DEFAULT_STUDIES))
    sample.add_argument("--force", action="store_true", help="rebuild even if present")
    sample.set_defaults(func=cmd_sample_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = {"serve", "reason", "segment", "sample-data", "download-weights", "merge-adapter", "skills", "traces",
                "export-traces", "evaluate", "finetune", "simulate-al", "-h", "--help"}
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
        return args.func(args)
    except SeerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
