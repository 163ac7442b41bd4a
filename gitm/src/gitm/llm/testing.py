"""A loopback OpenAI-compatible server (stdlib ``http.server`` on ``127.0.0.1:0``) for the demo and tests.

It serves ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models`` so that the real
``openai`` client -> HTTP -> parser path runs without any network or model. Answers come from a
responder:

- :class:`OracleResponder` (default) reads the rendered prompt and answers as the deterministic planner,
  decomposer and summariser would (:func:`gitm.planner.request_from_messages`); the decomposer answers
  use the Python literal ``None`` as the paper's prompt examples do, so the tolerant parser is exercised;
- :class:`ScriptedResponder` replays a list of answers (text, or :class:`HTTPFailure` for 401/429/500),
  e.g. malformed JSON, an unknown action, a plan that fails, then falls back to another responder.

With ``api_key=`` set the server answers 401 to any other key (the invalid-key test).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np

from ..actions import normalize_action
from ..decomposer import OracleDecomposer
from ..knowledge.tables import Knowledge
from ..planner import OraclePlanner, request_from_messages
from ..summarizer import summary_text

MODEL_ID = "gitm-oracle"


@dataclass
class HTTPFailure:
    """A scripted error response."""

    status: int
    message: str = "scripted failure"


Responder = Callable[[dict], "str | HTTPFailure"]


class OracleResponder:
    """Answers planner, decomposer and summariser prompts from the tables (module docstring)."""

    def __init__(self, knowledge: Knowledge | None = None):
        self.k = knowledge or Knowledge.default()
        self.planner = OraclePlanner(self.k)
        self.decomposer = OracleDecomposer(self.k)

    def __call__(self, body: dict) -> str | HTTPFailure:
        msgs = body.get("messages") or []
        system = next((m.get("content", "") for m in msgs if m.get("role") == "system"), "")
        user = next((m.get("content", "") for m in msgs if m.get("role") == "user"), "")
        if "breaks goals into their prerequisites" in system:
            m = re.search(r"Target: (\d+) (\S+)", user)
            if not m:
                return HTTPFailure(400, "no 'Target: COUNT OBJECT' line in the decomposer prompt")
            g = self.decomposer.goal(m.group(2), int(m.group(1)))
            text = json.dumps(g.to_dict())
            return text.replace("null", "None")  # as the paper's examples write it
        if "several successful action sequences" in system:
            plans = [[normalize_action(a) for a in json.loads(line.split(". ", 1)[1])]
                     for line in user.splitlines() if re.match(r"^\d+\. \[", line)]
            return summary_text(plans)
        if "first think about a plan" in system:
            try:
                return self.planner.plan(request_from_messages(msgs))
            except ValueError as e:
                return HTTPFailure(400, f"cannot read the planner prompt: {e}")
        return HTTPFailure(400, "unrecognised prompt (not a gitm planner, decomposer or summariser prompt)")


class ScriptedResponder:
    """Replays ``script`` in order (one item per chat request), then asks ``fallback`` (or fails 500)."""

    def __init__(self, script: list, fallback: Responder | None = None):
        self.script, self.fallback = list(script), fallback
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str | HTTPFailure:
        with self.lock:
            if self.script:
                item = self.script.pop(0)
                return item(body) if callable(item) else item
        if self.fallback is not None:
            return self.fallback(body)
        return HTTPFailure(500, "script exhausted")


def _tokens(text: str) -> int:
    return len(str(text).split())


def embed(text: str, dim: int = 64) -> list[float]:
    """A deterministic hashed bag-of-words vector (the loopback server's ``/v1/embeddings``)."""
    v = np.zeros(dim)
    for w in re.findall(r"[a-z0-9_]+", text.lower()):
        for part in {w, *w.split("_")}:
            h = int.from_bytes(part.encode()[:8].ljust(8, b"\0"), "little") * 2654435761 % (2**61 - 1)
            v[h % dim] += 1.0
    return (v / max(np.linalg.norm(v), 1e-12)).tolist()


class LoopbackServer:
    """``with LoopbackServer() as srv: LLMConfig(base_url=srv.base_url, ...)``.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``.
        requests: the JSON bodies of every chat request received (tests inspect them).
    """

    def __init__(self, responder: Responder | None = None, api_key: str | None = None, delay_s: float = 0.0):
        self.responder = responder or OracleResponder()
        self.api_key, self.delay_s = api_key, delay_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one small response per request: no 40 ms delayed-ACK stalls
            wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"error": {"message": message, "type": "loopback_error", "code": status}})

            def _authorised(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization", "") == f"Bearer {server.api_key}":
                    return True
                self._error(401, "Incorrect API key provided.")
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "gitm"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._error(400, "the request body is not JSON")
                    return
                if not self._authorised():
                    return
                if self.path.endswith("/chat/completions"):
                    with server._lock:
                        server.requests.append(body)
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    answer = server.responder(body)
                    if isinstance(answer, HTTPFailure):
                        self._error(answer.status, answer.message)
                        return
                    pt = sum(_tokens(m.get("content", "")) for m in body.get("messages", []))
                    ct = _tokens(answer)
                    self._send(200, {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                                     "created": int(time.time()), "model": body.get("model", MODEL_ID),
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": answer}}],
                                     "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}})
                elif self.path.endswith("/embeddings"):
                    inputs = body.get("input", [])
                    inputs = [inputs] if isinstance(inputs, str) else inputs
                    self._send(200, {"object": "list", "model": body.get("model", MODEL_ID),
                                     "data": [{"object": "embedding", "index": i, "embedding": embed(t)}
                                              for i, t in enumerate(inputs)],
                                     "usage": {"prompt_tokens": sum(map(_tokens, inputs)), "total_tokens": 0}})
                else:
                    self._error(404, f"no route {self.path}")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gitm-loopback", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
