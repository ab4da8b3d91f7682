"""A small real OpenAI-compatible chat-completions server for tests: it serves a (tiny) Qwen3-VL through the same
QwenVLEngine the local reasoner uses. Images arrive as data URLs, as vLLM receives them."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def _from_openai(messages: list[dict]) -> tuple[list[dict], list]:
    images, out = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        items = []
        for item in content:
            if item["type"] == "image_url":
                data = item["image_url"]["url"].split(",", 1)[1]
                image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
                images.append(image)
                items.append({"type": "image", "image": image})
            else:
                items.append({"type": "text", "text": item["text"]})
        out.append({"role": message["role"], "content": items})
    return out, images


class ChatServer:
    def __init__(self, engine, delay_s: float = 0.0, served_model: str = "seer"):
        self.engine = engine
        self.delay_s = delay_s
        self.served_model = served_model
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if body.get("model") != server.served_model:
                    self._json(404, {"error": {"message": f"model {body.get('model')} not served"}})
                    return
                time.sleep(server.delay_s)
                messages, images = _from_openai(body["messages"])
                text, _ = server.engine.generate(messages, images, max_new_tokens=body.get("max_tokens", 256))
                self._json(200, {"object": "chat.completion", "model": server.served_model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
