"""A Slack incoming webhook on 127.0.0.1 (port 0) that answers from a script and records each request.

A real HTTP server rather than a stubbed ``post``: the notifier's urllib code, headers, status
handling, dropped connections and redirects are all exercised as they are against Slack.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from energy_auction.adapters.slack import HttpResponse, post_json

SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxSecretWebhookToken"
"""The path part of a webhook URL is its secret; tests check it never shows up anywhere."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``drop`` closes the connection without answering; ``delay`` answers that
    many seconds late (a Slack that hangs)."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeSlack:
    """Answers each request with the next scripted :class:`Reply`, then with ``otherwise``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.accepted: list[Received] = []
        """The requests answered with a 2xx status (what Slack would have posted to the channel)."""
        self.otherwise = Reply()
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, and tests start and stop many servers.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{SECRET_PATH}"

    def answer(self, *replies: Reply) -> FakeSlack:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)
        return self

    def posts(self) -> list[Any]:
        """The JSON bodies of the POSTs received, in order."""
        return [r.json() for r in self.received if r.method == "POST"]

    def posted(self) -> list[Any]:
        """The JSON bodies of the POSTs answered with a 2xx status, in order."""
        with self._lock:
            return [r.json() for r in self.accepted if r.method == "POST"]

    def _next(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            return self._script.popleft() if self._script else self.otherwise

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(self.command, self.path, dict(self.headers.items()), body)
                reply = fake._next(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                data = reply.body.encode()
                if 200 <= reply.status < 300:
                    # Noted before the answer goes out: a client that has its 2xx finds it here.
                    with fake._lock:
                        fake.accepted.append(request)
                self.send_response(reply.status)
                for name, value in {"Content-Type": "text/plain", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _serve  # the names http.server dispatches to

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# --- Reading what was posted: a notice, or a digest of order notices (energy_auction.digest) -----

_LISTED = re.compile(r"^• (?P<record_id>\S+) \((?P<trader>.*?)\) (?P<what>rejected|failed to process): ")
_MORE = re.compile(r"the first \d+ below, and (?P<count>[\d,]+) more: (?P<kinds>.*)\.$")


def kind_of(post: Any) -> str:
    """The notice kind a post shows in its context line (``digest`` for a digest)."""
    context = post["blocks"][-1]["elements"][0]["text"]
    return str(context.split("`")[1])


def listed_lines(post: Any) -> list[str]:
    """The lines of a post's list (a digest's), as posted (escaped)."""
    lines: list[str] = []
    for block in post["blocks"][2:-1]:
        lines += block["text"]["text"].split("\n")
    return lines


def rejections_listed(post: Any) -> list[str]:
    """The record_ids of the rejections a post names: a digest's listed ones, or the one a single
    rejection notice is about."""
    if kind_of(post) == "order_rejected":
        return [post["blocks"][0]["text"]["text"].split()[1]]
    found = [_LISTED.match(line) for line in listed_lines(post)] if kind_of(post) == "digest" else []
    return [m["record_id"] for m in found if m and m["what"] == "rejected"]


def rejections_counted(post: Any) -> int:
    """How many rejections a digest counts in its "more" without listing them."""
    more = _MORE.search(post["blocks"][1]["text"]["text"]) if kind_of(post) == "digest" else None
    counted = re.search(r"([\d,]+) orders? rejected", more["kinds"]) if more else None
    return int(counted[1].replace(",", "")) if counted else 0


class Pacing:
    """The Slack notifier's clock and sleep in a test: sleeping moves the clock instead of waiting,
    and :meth:`post` (the notifier's ``post``) notes the time of each request on that clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.posted_at: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def post(self, url: str, body: bytes, timeout: float) -> HttpResponse:
        self.posted_at.append(self.now)
        return post_json(url, body, timeout)

    def gaps(self) -> list[float]:
        """The time between each post and the one before it."""
        return [b - a for a, b in zip(self.posted_at, self.posted_at[1:], strict=False)]
