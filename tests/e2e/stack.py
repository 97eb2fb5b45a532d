"""Start the local stack as a real process and talk HTTP to it (loopback only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

STARTUP_TIMEOUT = 30.0


class OrderBody(TypedDict):
    """One order as a client posts it in the JSON array of ``POST /orders``."""

    record_id: str
    parameter_1: str
    parameter_2: float


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)


@dataclass
class LocalStack:
    """One ``energy-auction local`` process on a free port, with its home folder."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ("--no-schedule",)
    file_size_limit: int | None = None
    """Bytes any file the stack writes may grow to (RLIMIT_FSIZE): a disk that fills up."""
    process: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)
    _drain: threading.Thread = field(init=False, repr=False)

    def start(self) -> LocalStack:
        env = {**os.environ, "ENERGY_AUCTION_HOME": str(self.home), "PORT": "0", **self.env}
        command = [sys.executable, "-m", "energy_auction.cli", "local", *self.args]
        if self.file_size_limit:
            # A launcher sets the limit and execs the stack (no preexec_fn in a threaded test run).
            # SIGXFSZ ignored: a write past the limit fails with EFBIG instead of killing the process.
            limit = self.file_size_limit
            launcher = (
                "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
            )
            command = [sys.executable, "-c", launcher, *command[1:]]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"local stack exited: {self.process.wait()}\n{''.join(self.output)}")
            self.output.append(line)
            if "listening on " in line:
                self.url = line.split("listening on ")[1].strip()
                break
        else:
            raise RuntimeError("local stack did not start in time")
        # Keep draining the logs so the stack never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()
        while self.request("GET", "/health").status != 200:
            time.sleep(0.05)
        return self

    def log_lines(self) -> list[dict[str, Any]]:
        """The stack's JSON log lines so far (other output left out)."""
        found = []
        for line in list(self.output):
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict) and "level" in document:
                found.append(document)
        return found

    def wait_for_log(
        self, matches: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The log lines that match, once at least one has arrived (the logs come in on a thread)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines() if matches(line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_for_notices(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The notices in ``<home>/notifications.jsonl`` once ``done`` says they are all there: the
        stack's own delivery thread may take a notice a ``run-pipeline`` published, and write it
        after that command has ended."""
        path = self.home / "notifications.jsonl"
        deadline = time.monotonic() + timeout
        while True:
            notices = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            if done(notices) or time.monotonic() > deadline:
                return notices
            time.sleep(0.05)

    def _read_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._drain.join(timeout=5)
        return code

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``energy-auction ARGS`` on this stack's home folder."""
        return subprocess.run(
            [sys.executable, "-m", "energy_auction.cli", *args],
            env={**os.environ, "ENERGY_AUCTION_HOME": str(self.home), **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def token(self, *args: str) -> str:
        return self.cli("token", *args).stdout.strip()

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> HttpResult:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return HttpResult(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return HttpResult(err.code, dict(err.headers), err.read())

    def post_orders(self, orders: Any, token: str, raw: str | None = None) -> HttpResult:
        body = raw if raw is not None else json.dumps(orders)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return self.request("POST", "/orders", body, headers)

    def get_order(self, record_id: str, token: str) -> HttpResult:
        return self.request("GET", f"/orders/{record_id}", headers={"Authorization": f"Bearer {token}"})
