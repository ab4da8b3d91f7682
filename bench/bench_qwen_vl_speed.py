"""The qwen-vl reasoner's speed options on this CPU: a mid-sized random Qwen3-VL (4 language layers 512 wide, a
4-block vision tower 256 wide) through the reasoner's own generation path, each variant's time as a ratio to the
plain path (unmerged LoRA, dynamic cache, no vision cache, no compile) measured in the same run
(bench/qwen_vl_variants.py says what each figure is). The same script with the 4B-sized model runs on a GPU as
bench/gpu_qwen_vl.py.

Run: python bench/bench_qwen_vl_speed.py [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import sys

import torch
from _util import REPO, save, table

sys.path.insert(0, str(REPO / "tests"))

from qwen_vl_variants import build, measure  # noqa: E402

CONFIG = {
    "text_config": {
        "vocab_size": 151936, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "rope_theta": 5_000_000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [16, 8, 8], "mrope_interleaved": True},
        "max_position_embeddings": 8192, "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 4, "hidden_size": 256, "intermediate_size": 1024, "num_heads": 4, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 512, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [1, 2],
    },
    "tie_word_embeddings": True,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request (64)")
    args = parser.parse_args()
    device = torch.device("cpu")
    model, processor = build(CONFIG, device, torch.float32)
    results = measure(model, processor, device, "float32", args.new_tokens, batches=(1, 4))
    columns = ["variant", "first_request_s", "second_request_s", "prompt_s", "decode_ms_per_token",
               "batch4_requests_per_s", "first_vs_plain", "second_vs_plain", "decode_vs_plain"]
    print(table([{"variant": name, **row} for name, row in results.items()], columns))
    save("qwen_vl_speed_cpu", {"config": CONFIG, "new_tokens": args.new_tokens, "threads": torch.get_num_threads(),
                               "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
