"""SEER through an OpenAI-compatible chat-completions server (vLLM, SGLang) serving Qwen3-VL with SEER.

Same message contract as the local reasoner; the 8 slices travel as base64 PNG data URLs. Greedy decoding
(temperature 0), `max_tokens` as configured, a per-request timeout and a bounded number of retries on connection
errors and 5xx replies. An unreachable or failing endpoint is a ReasonerUnavailable (HTTP 503 / exit 2) naming the
URL.

vLLM example (see docs/seer-vlm.md): `vllm serve Qwen/Qwen3-VL-4B-Instruct --enable-lora --lora-modules seer=/path/adapter
--max-lora-rank 64 --limit-mm-per-prompt '{"image": 8}'`, then `--conf endpoint http://host:8000/v1
--conf endpoint_model seer`. vLLM ignores a LoRA on Qwen-VL's vision tower: only a language-model adapter or
merged weights (`main.py merge-adapter`) reproduce SEER there.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, replace

import requests

from seer.errors import BadRequest
from seer.reasoning.prompts import build_messages
from seer.reasoning.reasoners.base import ReasoningInput
from seer.reasoning.reasoners.qwen_vl import ReasonerUnavailable, TraceCache
from seer.reasoning.trace import Trace, parse_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointSettings:
    url: str = ""  # base URL ending in /v1 (or the full .../chat/completions URL)
    model: str = "seer"  # model name at the endpoint (the LoRA module or served model name)
    api_key_env: str = "SEER_ENDPOINT_API_KEY"
    timeout_s: float = 60.0
    retries: int = 2
    max_new_tokens: int = 256
    cache_size: int = 512


def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """Contract messages (transformers layout with PIL images) -> chat-completions layout with data URLs."""
    out = []
    for message in messages:
        content = []
        for item in message["content"]:
            if item["type"] == "image":
                content.append({"type": "image_url", "image_url": {"url": png_data_url(item["image"])}})
            else:
                content.append({"type": "text", "text": item["text"]})
        out.append({"role": message["role"], "content": content})
    return out


class OpenAIReasoner:
    name = "openai"
    needs_images = True

    def __init__(self, settings: EndpointSettings):
        if not settings.url:
            raise BadRequest("The openai reasoner needs an endpoint URL: --conf endpoint http://host:port/v1.")
        if not settings.url.startswith(("http://", "https://")):
            raise BadRequest(f"The endpoint '{settings.url}' must start with http:// or https://.")
        self.settings = settings
        url = settings.url.rstrip("/")
        self.completions_url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.cache = TraceCache(settings.cache_size)
        self._sessions = threading.local()  # requests.Session is not documented as thread-safe: one per thread
        self._lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def _headers(self) -> dict:
        key = os.environ.get(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def complete(self, messages: list[dict]) -> str:
        """POST the messages; returns the assistant text or raises ReasonerUnavailable naming the URL."""
        body = {
            "model": self.settings.model,
            "messages": to_openai_messages(messages),
            "max_tokens": self.settings.max_new_tokens,
            "temperature": 0.0,
        }
        last_error = ""
        for attempt in range(self.settings.retries + 1):
            try:
                reply = self._session.post(
                    self.completions_url, json=body, headers=self._headers(), timeout=self.settings.timeout_s
                )
            except requests.Timeout:
                last_error = f"no reply within {self.settings.timeout_s:g} s"
                break  # a slow server is not retried: the caller is already waiting
            except requests.ConnectionError as exc:
                last_error = f"unreachable ({type(exc).__name__})"
            else:
                if reply.status_code == 200:
                    try:
                        return reply.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise ReasonerUnavailable(
                            f"The SEER endpoint {self.completions_url} replied without a chat completion."
                        ) from None
                if reply.status_code < 500:
                    raise ReasonerUnavailable(
                        f"The SEER endpoint {self.completions_url} refused the request "
                        f"(HTTP {reply.status_code}: {reply.text[:200]})."
                    )
                last_error = f"HTTP {reply.status_code}"
            if attempt < self.settings.retries:
                time.sleep(min(2.0, 0.25 * 2**attempt))
        raise ReasonerUnavailable(
            f"The SEER endpoint {self.completions_url} is not usable: {last_error} "
            f"(after {self.settings.retries + 1} attempt(s)); check that the server runs and the URL is right."
        )

    def reason(self, inputs: ReasoningInput) -> Trace:
        started = time.perf_counter()
        key = "|".join([inputs.study_key or "no-image", inputs.request.text,
                        ",".join(s.skill_id for s in inputs.skills), self.completions_url, self.settings.model])
        cached = self.cache.lookup(key, inputs.bank_version)
        if cached is not None:
            return replace(cached, timings={"cache_hit": True, "total_s": time.perf_counter() - started})
        if inputs.views is None:
            raise BadRequest("The openai reasoner needs the image: give --image (CLI) or an image id (server).")
        messages = build_messages(inputs.views.images(), inputs.request.text, inputs.skills)
        t0 = time.perf_counter()
        text = self.complete(messages)
        trace = parse_output(text, inputs.request.text)
        trace.skill_ids = [s.skill_id for s in inputs.skills]
        trace.reasoner = self.name
        trace.timings = {"cache_hit": False, "endpoint_s": time.perf_counter() - t0,
                         "total_s": time.perf_counter() - started}
        self.cache.put(key, trace)
        return replace(trace)
