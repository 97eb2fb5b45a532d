"""``run-pipeline``'s progress line, as a user sees it: the real command with its stderr on a
pseudo-terminal (stdout a pipe, as in ``run-pipeline > summary.json``), and with stderr not a
terminal at all. ``--progress-after 0`` draws the line at once, so no test waits for the 2 s."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from energy_auction.bootstrap import Container
from energy_auction.settings import Backend, Settings
from tests.builders import store_orders
from tests.terminal import screen

pytestmark = pytest.mark.e2e

READY = ("run-pipeline", "--ready-probability", "1", "--accept-probability", "1", "--seed", "5")
"""A run whose market is ready and accepts every order (no notice to wait for)."""


def home_with_orders(tmp_path: Path, count: int) -> Path:
    home = tmp_path / "home"
    container = Container(Settings(backend=Backend.LOCAL, home=home, jwt_secret="x" * 40))
    store_orders(container, count)
    container.order_store.close()  # type: ignore[attr-defined]
    return home


PROGRESS = re.compile(r"settled \d+ / \d+ orders")
"""The progress line's count (the run summary notice, logged, also says "settled N orders")."""
OUTPUT = {"POWERTOOLS_LOG_LEVEL": "INFO", "POWERTOOLS_METRICS_DISABLED": "false"}
"""The run's log and metric lines on stderr, as a user's run-pipeline writes them (tests turn them off)."""


def command(home: Path, env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    environ = {**os.environ, "ENERGY_AUCTION_HOME": str(home), "TERM": "xterm", **OUTPUT, **(env or {})}
    return [sys.executable, "-m", "energy_auction.cli"], environ


def on_terminal(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``energy-auction ARGS`` with stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    argv, environ = command(home, env)
    terminal, stderr = pty.openpty()
    process = subprocess.Popen([*argv, *args], env=environ, stdout=subprocess.PIPE, stderr=stderr)
    os.close(stderr)
    received: list[bytes] = []

    def read() -> None:  # drained as it comes, so the command never blocks on a full terminal
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the command closed the terminal's other side
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
        os.close(terminal)
    return process.returncode, stdout.decode(), b"".join(received).decode()


def test_a_run_on_a_terminal_shows_its_progress_and_prints_one_json_document(tmp_path: Path) -> None:
    # Given 300 orders ready to settle
    home = home_with_orders(tmp_path, 300)

    # When a run executes with stderr on a terminal
    code, stdout, shown = on_terminal(home, *READY, "--progress-after", "0")

    # Then stdout is exactly one JSON document, the run's summary
    summary = json.loads(stdout)
    assert (code, summary["status"], summary["orders"], summary["accepted"]) == (0, "SUCCEEDED", 300, 300)
    # and the terminal got a progress line, rewritten in place, counting the orders it settles
    assert "\rsettled " in shown
    assert " / 300 orders (" in shown
    assert "orders/s)" in shown
    # and the line stepped aside for the run's output (JSON log and metric lines, a library's
    # warning) and was wiped at the end: what stays on the screen is that output alone, each log
    # line whole, and a blank row under it
    rows = screen(shown)
    assert rows[-1] == ""
    assert not [row for row in rows if PROGRESS.search(row) or "orders/s" in row]
    for row in rows:
        if row.startswith("{"):
            json.loads(row)


@pytest.mark.parametrize(
    ("option", "env"),
    [("--no-progress", {}), ("--progress-after=0", {"TERM": "dumb"})],
    ids=["option", "dumb"],
)
def test_no_progress_and_a_dumb_terminal_draw_no_line(
    tmp_path: Path, option: str, env: dict[str, str]
) -> None:
    home = home_with_orders(tmp_path, 30)

    code, stdout, shown = on_terminal(home, *READY, option, env=env)

    assert (code, json.loads(stdout)["orders"]) == (0, 30)
    # a carriage return comes only with each newline (the terminal's own), never alone
    assert shown.count("\r") == shown.count("\r\n")
    assert not PROGRESS.search(shown)


def test_when_stderr_is_not_a_terminal_there_is_no_line_and_stdout_is_one_json_document(
    tmp_path: Path,
) -> None:
    # Given orders, and a run whose stderr is a pipe (a CI log, a file), the line asked at once
    home = home_with_orders(tmp_path, 30)
    argv, environ = command(home, None)

    done = subprocess.run(
        [*argv, *READY, "--progress-after", "0"],
        env=environ,
        capture_output=True,
        check=False,
        timeout=300,
    )

    # Then stdout is the summary alone, and stderr only the run's own output: its log and metric
    # lines, no line rewritten in place, no progress
    assert (done.returncode, json.loads(done.stdout)["orders"]) == (0, 30)
    assert b"\r" not in done.stderr
    assert not [
        line
        for line in done.stderr.decode().splitlines()
        if line.startswith(("asking the market", "waiting for the market")) or PROGRESS.search(line)
    ]
    assert b'"OrdersAccepted"' in done.stderr
