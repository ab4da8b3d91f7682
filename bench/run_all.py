"""Run every benchmark in turn (each prints its own table and writes bench/results/<name>.json)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_resolution.py", "bench_reason_batch.py", "bench_atlas_quality.py", "bench_infer_latency.py",
           "bench_skills.py", "bench_save_label.py", "bench_evaluate.py", "bench_active_learning.py",
           "bench_simulate_al.py", "bench_dicomweb.py", "bench_ohif.py", "bench_team.py", "bench_memory.py",
           "bench_finetune.py", "bench_hostile.py", "bench_labels_check.py", "bench_state_db.py",
           "bench_review.py", "bench_agreement.py", "bench_review_concurrency.py", "bench_qwen_vl_speed.py",
           "bench_server_start.py"]

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        print(f"\n##### {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
