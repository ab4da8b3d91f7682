"""Commands of the reasoning stage: download-weights (the only command that goes online), merge-adapter, and
labels check (how a team's label map is read).
"""

from __future__ import annotations

import json
import sys

from seer.errors import SeerError

VOXTELL_REPO = "mrokuss/VoxTell"


def cmd_download_weights(args) -> int:
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


def cmd_merge_adapter(args) -> int:
    from seer.reasoning.reasoners.qwen_vl import merge_adapter

    try:
        out = merge_adapter(args.model, args.adapter, args.output, dtype=args.dtype)
    except (OSError, ValueError) as exc:
        raise SeerError(f"Could not merge {args.adapter} into {args.model}: {str(exc).splitlines()[0][:200]}") from None
    print(json.dumps({"output": str(out)}))
    return 0


def cmd_labels(args) -> int:
    """labels check MAP.json: each label's reading, phrasings that resolve to it, collisions, undecoded names."""
    from seer.files import text_table
    from seer.reasoning.label_check import check_label_map, read_label_map

    report = check_label_map(read_label_map(args.map))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    rows = [{"id": r["id"], "name": r["name"], "reads as": " ".join([*r["concepts"], *r["qualifiers"], *r["lesion"]])
             or r["reads_as"], "side": r["side"], "aliases": ", ".join(r["aliases"]) or None,
             "phrasings": " | ".join(r["phrasings"]) or None} for r in report["labels"]]
    print(text_table(rows, ["id", "name", "reads as", "side", "aliases", "phrasings"]))
    summary = report["summary"]
    print(f"\n{summary['labels']} labels, {summary['with_phrasings']} with phrasings that resolve to them, "
          f"{summary['collisions']} collision(s), {summary['undecoded']} undecoded, {summary['aliases']} alias(es)")
    for item in report["collisions"] + report["undecoded"]:
        print(f"- {item['why']}")
    return 0
