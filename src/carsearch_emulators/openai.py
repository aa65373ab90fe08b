"""An EMULATOR of an OpenAI-compatible chat-completions server with image input (the API vLLM,
Ollama and LM Studio serve), for tests. Not OpenAI: answers come from the offline captioner,
looked up by the recordId passed in the `user` field; a request for every vehicle
(`formats.wants_vehicles`) is answered with the frame's known boxes as vehicles JSON."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from carsearch.captioning import formats
from carsearch.captioning.offline import offline_caption, offline_vehicles


@dataclass
class ChatCompletionsEmulator:
    labels: dict = field(default_factory=dict)  # recordId -> labels
    frames: dict = field(default_factory=dict)  # recordId -> manifest row (width, height, boxes): vehicles requests
    latency: float = 0.0  # seconds per request
    fail_first: int = 0  # first N requests answer 503
    api_key: str | None = None  # require `Authorization: Bearer <key>`

    def __post_init__(self):
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> "ChatCompletionsEmulator":
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, obj: dict):
                payload = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if emu.api_key and self.headers.get("Authorization") != f"Bearer {emu.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                with emu._lock:
                    emu.requests.append(body)
                    n = len(emu.requests)
                    emu.in_flight += 1
                    emu.max_in_flight = max(emu.max_in_flight, emu.in_flight)
                try:
                    time.sleep(emu.latency)
                    status, reply = (
                        (503, {"error": {"message": "model loading"}})
                        if n <= emu.fail_first
                        else (200, emu._answer(body))
                    )
                finally:  # done before the reply leaves: the client may send its next request at once
                    with emu._lock:
                        emu.in_flight -= 1
                return self._send(status, reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _answer(self, body: dict) -> dict:
        rid = body.get("user") or ""
        has_image = any(
            isinstance(c, dict) and c.get("type") == "image_url"
            for m in body.get("messages", [])
            if isinstance(m.get("content"), list)
            for c in m["content"]
        )
        labels, frame = self.labels.get(rid), self.frames.get(rid)
        if not has_image:
            text = "Please attach an image."
        elif formats.wants_vehicles(body) and (labels or (frame or {}).get("boxes")):
            text = json.dumps(offline_vehicles(labels, frame, rid, formats.stated_image_size(body)))
        elif labels:
            text = json.dumps(offline_caption(labels, rid))
        else:
            text = "I cannot tell what car this is."
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "emulated"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 500,
                "completion_tokens": max(1, len(text) // 4),
                "total_tokens": 500 + len(text) // 4,
            },
        }
