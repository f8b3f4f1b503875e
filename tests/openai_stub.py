"""A small OpenAI-compatible server on 127.0.0.1, for tests of the real `openai` client.

It answers POST /v1/embeddings with a deterministic unit vector per text, in shuffled
order (so the client must restore it from `index`), POST /v1/chat/completions with an
answer built from the prompt's first passage (see `chat_answer`), and records every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


def fake_vector(text: str, dim: int) -> np.ndarray:
    """Return the unit vector the stub gives `text`: seeded by its hash, so stable across runs."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def chat_answer(messages: list[dict]) -> str:
    """Return the stub's reply: the first sentence of the prompt's passage [1], cited as [1]."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    match = re.search(r"^\[1\] [^\n]*\n([^\n]*)", user, re.M)
    if match is None:
        return "I do not know: no passages were given."
    first = re.split(r"(?<=[.!?])\s", match.group(1).strip(), maxsplit=1)[0]
    return f"{first} [1]"


class OpenAIStub:
    """The server: `url` for OPENAI_BASE_URL, `requests` as received, `failures` to answer first.

    Each entry of `failures` is an HTTP status (429, 500, 401, ...), or a (status,
    error code) pair, that the next request gets instead of vectors.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures: list[int | tuple[int, str]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                    )
                    failure = stub.failures.pop(0) if stub.failures else 200
                status, code = failure if isinstance(failure, tuple) else (failure, None)
                if self.path not in ("/v1/embeddings", "/v1/chat/completions"):
                    status = 404
                if status != 200:
                    key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    # Like OpenAI's, the 401 text quotes the key: the client must not pass it on.
                    message = (
                        f"Incorrect API key provided: {key}" if status == 401 else f"stub error {status}"
                    )
                    return self._send(status, {"error": {"message": message, "type": "stub", "code": code}})
                if self.path == "/v1/chat/completions":
                    return self._send(200, self._chat(body))
                dim = body.get("dimensions") or DIMS[body["model"]]
                data = []
                for i, text in enumerate(body["input"]):
                    vector = fake_vector(text, dim)
                    if body.get("encoding_format") == "base64":
                        encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode()
                    else:
                        encoded = vector.tolist()
                    data.append({"object": "embedding", "index": i, "embedding": encoded})
                random.Random(len(stub.requests)).shuffle(data)
                tokens = sum(len(t.split()) for t in body["input"])
                usage = {"prompt_tokens": tokens, "total_tokens": tokens}
                self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

            def _chat(self, body: dict) -> dict:
                text = chat_answer(body["messages"])
                prompt = sum(len(m["content"].split()) for m in body["messages"])
                return {
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
                              "total_tokens": prompt + len(text.split())},
                }

            def _send(self, status: int, doc: dict) -> None:
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest's output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        # A short poll interval makes shutdown() quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
