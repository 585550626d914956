"""A small OpenAI-compatible HTTP server answering like the ``fake/`` provider, with faults.

For tests and benchmarks of the HTTP path every real run takes: litellm's OpenAI client,
status codes, ``Retry-After``, slow answers and dropped connections. It answers
``POST /v1/chat/completions`` (and ``GET /v1/models``) exactly as ``fake/default`` answers
the same messages, seed and temperature in-process (:class:`simworld.llm.providers.fake.FakeLLM`),
including ``response_format`` JSON schemas and ``logprobs``; so its answers are
deterministic, and a run against it can be compared with an in-process fake run.

It binds ``127.0.0.1`` only. Capacity is fixed: at most ``capacity`` requests are answered
at once, each taking ``latency_ms``; the rest wait. Faults are queued with
:meth:`FakeServer.inject` and hit the next requests in arrival order.

Run it on its own (it prints its base URL, then serves until stopped)::

    python -m simworld.llm.fake_server --latency-ms 100 --capacity 16
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from simworld.llm.providers.fake import FakeLLM

HOST = "127.0.0.1"
FAKE_MODEL = "fake/default"
FaultKind = Literal["rate_limit", "server_error", "slow", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("rate_limit", "server_error", "slow", "drop")


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    Attributes:
        kind: ``rate_limit`` (429 with ``Retry-After``), ``server_error`` (500), ``slow``
            (answers after ``delay_s``), ``drop`` (closes the connection without answering).
        retry_after_s: The ``Retry-After`` header of a 429 (``None``: none sent).
        delay_s: Extra seconds before a ``slow`` answer.
    """

    kind: FaultKind
    retry_after_s: float | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """A request the server received.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        body: The JSON body.
        authorization: The ``Authorization`` header (``""`` when absent).
        fault: The fault it met, if any.
    """

    at: float
    body: dict[str, Any]
    authorization: str
    fault: FaultKind | None


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` answer to a request body, as ``fake/default`` answers.

    Args:
        body: The request (``messages``, ``seed``, ``temperature``, ``response_format``,
            ``logprobs`` are read; other parameters are accepted and ignored).

    Returns:
        The response object, deterministic in the body.
    """
    messages = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
        for m in body.get("messages", [])
    ]
    response = FakeLLM()._answer(FAKE_MODEL, messages, body)
    choice = response.choices[0]
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is not None and not isinstance(logprobs, dict):
        logprobs = logprobs.model_dump()
    usage = response.usage  # type: ignore[attr-defined]  # litellm sets it at run time
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": str(body.get("model", FAKE_MODEL)),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": choice.message.content},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (about 40 ms per answer on Linux)
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request on stderr."""

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """``/v1/models``: the one model name the server answers to (any name works)."""
        if self.path.rstrip("/").endswith("/models"):
            models = [{"id": "fake", "object": "model", "owned_by": "simworld"}]
            self._send_json(HTTPStatus.OK, {"object": "list", "data": models})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, _error("not found", "not_found"))

    def do_POST(self) -> None:
        """``/v1/chat/completions``, with the next queued fault applied."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(HTTPStatus.NOT_FOUND, _error("not found", "not_found"))
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send_json(HTTPStatus.BAD_REQUEST, _error("body is not JSON", "invalid_request"))
            return
        owner = self.server.owner
        fault = owner._arrive(body, self.headers.get("Authorization") or "")
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "rate_limit":
            headers = {}
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            self._send_json(
                HTTPStatus.TOO_MANY_REQUESTS,
                _error("injected rate limit", "rate_limit_exceeded"),
                headers,
            )
            return
        if fault is not None and fault.kind == "server_error":
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, _error("injected server error", "server_error")
            )
            return
        delay = owner.latency_s + (fault.delay_s if fault is not None else 0.0)
        with owner._capacity, owner._serving():
            if delay:
                time.sleep(delay)
            answer = chat_completion(body)
        self._send_json(HTTPStatus.OK, answer)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timed out, cut) is normal here; anything else is shown."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner._lock:
            self.owner._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._connections.discard(request)
        super().shutdown_request(request)


class FakeServer:
    """An OpenAI-compatible server on ``127.0.0.1`` in a background thread.

    Use it as a context manager, or :meth:`start` and :meth:`stop`.

    Args:
        latency_ms: Time each answer takes (while holding one unit of capacity).
        capacity: Requests answered at once (the rest queue); ``None``: no limit.
        port: Port to bind (0: an ephemeral one).
    """

    def __init__(
        self, *, latency_ms: float = 0.0, capacity: int | None = None, port: int = 0
    ) -> None:
        self.latency_s = latency_ms / 1000
        self._capacity = threading.BoundedSemaphore(capacity) if capacity else _NoLimit()
        self._port = port
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._connections: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self.max_in_flight = 0
        """The most requests answered at once so far."""
        self.received: list[Received] = []
        """Every request, in arrival order."""

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:<port>/v1``)."""
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> FakeServer:
        """Bind and serve in a daemon thread; returns ``self``."""
        server = _HTTPServer((HOST, self._port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (clients see a dead server)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def inject(
        self,
        kind: FaultKind,
        *,
        count: int = 1,
        retry_after_s: float | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue a fault for the next ``count`` requests (after any already queued)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._faults.extend([Fault(kind, retry_after_s, delay_s)] * count)

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _arrive(self, body: dict[str, Any], authorization: str) -> Fault | None:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            self.received.append(
                Received(time.monotonic(), body, authorization, fault.kind if fault else None)
            )
        return fault

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _NoLimit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def free_port() -> int:
    """A port on ``127.0.0.1`` nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; the first line on stdout is the base URL."""
    parser = argparse.ArgumentParser(prog="python -m simworld.llm.fake_server", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeServer(latency_ms=args.latency_ms, capacity=args.capacity, port=args.port) as srv:
        print(srv.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
