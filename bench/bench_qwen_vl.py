"""The qwen-vl reasoner on this CPU with a tiny real Qwen3-VL (+ LoRA) built here: time per request split into
slice rendering, preprocessing (chat template + image processor), generation and parsing; the cache-hit time;
and throughput of 8 concurrent requests with generation serialized (batch 1) vs batched (batch 4, 8).

The tiny network (2 layers, 64 wide) makes generation cheap, so the split shows the fixed costs a real model adds
its generation time to; the GPU figures for a 4B-sized model come from bench/gpu_qwen_vl.py.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _util import REPO, Timer, save, table

sys.path.insert(0, str(REPO / "tests"))
from tiny_models import build_lora_adapter, build_tiny_qwen  # noqa: E402

from seer.imaging.views import take_views  # noqa: E402
from seer.reasoning.hygiene import clean_request  # noqa: E402
from seer.reasoning.reasoners.base import ReasoningInput  # noqa: E402
from seer.reasoning.reasoners.qwen_vl import QwenVLEngine, QwenVLReasoner, QwenVLSettings  # noqa: E402
from seer.reasoning.skills import SkillBank  # noqa: E402

N = 8
NEW_TOKENS = 32


def main():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(181, 217, 181)).astype(np.float32)
    skills = list(SkillBank.starter().skills.values())[:3]
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_qwen(Path(tmp) / "base")
        adapter = build_lora_adapter(base, Path(tmp) / "lora")
        rows = []
        engine = QwenVLEngine(QwenVLSettings(model=str(base), adapter=str(adapter), max_new_tokens=NEW_TOKENS))
        reasoner = QwenVLReasoner(engine.settings, engine)
        splits = []
        for i in range(N):
            views = take_views(volume + i)  # fresh slices each time: rendering is measured
            with Timer() as render:
                views.images()
            inputs = ReasoningInput(clean_request(f"rt hip bone pls {i}"), views, None, skills, None,
                                    study_key=f"s{i}", bank_version="v")
            reasoner.reason(inputs)
            splits.append({"render_s": render.seconds, **reasoner.last_timings})
        hits = []
        for _ in range(20):
            reasoner.reason(inputs)
            hits.append(reasoner.last_timings["total_s"])
        keys = ["render_s", "slices_s", "preprocess_s", "generate_s", "decode_s", "parse_s", "total_s"]
        med = {k: statistics.median(s[k] for s in splits[1:]) for k in keys}
        print("per request (median of 7 after one warm-up; tiny 2-layer Qwen3-VL + LoRA, "
              f"{NEW_TOKENS} new tokens max, 8 slices of 448x448):")
        print(table([{"stage": k, "seconds": v} for k, v in med.items()], ["stage", "seconds"]))
        print(f"cache hit: {statistics.median(hits) * 1000:.3f} ms "
              f"({med['total_s'] / statistics.median(hits):.0f}x faster than a generation)")

        views = take_views(volume)
        views.images()
        for batch in (1, 4, 8):
            eng = QwenVLEngine(QwenVLSettings(model=str(base), adapter=str(adapter), max_new_tokens=NEW_TOKENS,
                                              batch_size=batch, batch_wait_s=0.02))
            r = QwenVLReasoner(eng.settings, eng)
            r.reason(ReasoningInput(clean_request("warm up"), views, None, skills, None, study_key="w"))
            threads = [threading.Thread(target=r.reason, args=(ReasoningInput(
                clean_request(f"left kidney {i}"), views, None, skills, None, study_key=f"c{i}"),)) for i in range(8)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - start
            rows.append({"batch_size": batch, "requests": 8, "seconds": seconds, "requests_per_s": 8 / seconds})
        base_rps = rows[0]["requests_per_s"]
        for row in rows:
            row["vs_serial"] = row["requests_per_s"] / base_rps
        print("\n8 concurrent requests:")
        print(table(rows, ["batch_size", "requests", "seconds", "requests_per_s", "vs_serial"]))
        save("qwen_vl_cpu", {"split": med, "cache_hit_s": statistics.median(hits), "concurrency": rows})


if __name__ == "__main__":
    main()
