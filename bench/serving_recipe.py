"""The docs' vLLM / SGLang recipe (docs/seer-vlm.md, "One model, many servers") timed beside the in-process
reasoner in bench/gpu_qwen_vl.py, on the same random Qwen3-VL saved with its LoRA merged.

Each server is started as the recipe starts it (`vllm serve DIR --served-model-name seer --limit-mm-per-prompt
'{"image": 8}'`; SGLang's `python -m sglang.launch_server --model-path DIR --served-model-name seer`) on
127.0.0.1, only when its package is installed on the machine (nothing is downloaded). Requests are the contract's
messages in the chat-completions layout the `openai` reasoner sends (the 8 views as PNG data URLs, temperature
0), with exactly `new_tokens` new tokens (`min_tokens` = `max_tokens`, `ignore_eos`: random weights never write
</answer>). Figures: the first request on a study, a second on the same study (the server's prefix cache, if
any), and 4 / 8 concurrent requests on other studies in requests per second. The server is stopped by its process
group afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from _util import free_port

RECIPES = {
    "vllm": lambda model_dir, port: ["vllm", "serve", str(model_dir), "--served-model-name", "seer",
                                     "--limit-mm-per-prompt", '{"image": 8}', "--max-model-len", "8192",
                                     "--host", "127.0.0.1", "--port", str(port)],
    "sglang": lambda model_dir, port: [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_dir),
                                       "--served-model-name", "seer", "--host", "127.0.0.1", "--port", str(port)],
}


def chat_body(messages: list[dict], new_tokens: int) -> dict:
    """The `openai` reasoner's request body, forced to exactly `new_tokens` new tokens."""
    from seer.reasoning.reasoners.openai_compat import to_openai_messages

    return {"model": "seer", "messages": to_openai_messages(messages), "temperature": 0, "max_tokens": new_tokens,
            "min_tokens": new_tokens, "ignore_eos": True}


def serving_figures(kind: str, model_dir: Path, requests_messages: list[list[dict]], new_tokens: int,
                    log_dir: Path, start_timeout_s: float = 600, say=print) -> dict:
    """One recipe's figures, or {"absent": why} when its package is not installed or {"error": why} when its
    server did not start. `requests_messages[0]` is the study asked twice; the others are the batch's studies."""
    if importlib.util.find_spec(kind) is None:
        return {"absent": f"the {kind} package is not installed on this machine"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / f"{kind}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(RECIPES[kind](model_dir, port), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        started = time.perf_counter()
        while True:
            if proc.poll() is not None:
                return {"error": f"{kind} exited with {proc.returncode}: {log.read_text()[-1500:]}"}
            try:
                if requests.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.perf_counter() - started > start_timeout_s:
                return {"error": f"{kind} did not answer within {start_timeout_s:.0f} s: {log.read_text()[-1500:]}"}
            time.sleep(1)
        row: dict = {"start_s": time.perf_counter() - started}

        def ask(index: int) -> float:
            begun = time.perf_counter()
            reply = requests.post(f"{url}/v1/chat/completions", json=chat_body(requests_messages[index], new_tokens),
                                  timeout=300)
            reply.raise_for_status()
            tokens = reply.json().get("usage", {}).get("completion_tokens")
            if tokens is not None and tokens != new_tokens:
                raise RuntimeError(f"{kind} wrote {tokens} tokens instead of {new_tokens}")
            return time.perf_counter() - begun

        ask(len(requests_messages) - 1)  # warm-up on a study not measured
        row["first_request_s"] = ask(0)
        row["second_request_s"] = min(ask(0) for _ in range(3))
        row["ms_per_token_second"] = row["second_request_s"] / new_tokens * 1000
        for n in (4, 8):
            if n < len(requests_messages):
                with ThreadPoolExecutor(n) as pool:
                    begun = time.perf_counter()
                    list(pool.map(ask, range(1, n + 1)))
                    row[f"batch{n}_requests_per_s"] = n / (time.perf_counter() - begun)
        say(f"{kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        return row
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return {"error": f"{kind}: {exc}"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
