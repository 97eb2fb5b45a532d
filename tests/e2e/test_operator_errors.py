"""What an operator sees when the home folder cannot be used: the real command, as a process, on a
file system mounted read-only (in a user and mount namespace of its own, so no privilege is
needed and nothing outside the test's folder changes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

READ_ONLY = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
"""An empty read-only file system at $1, then the command."""
READ_ONLY_COPY = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
"""The folder $1, as it is, made read-only, then the command."""


def on_read_only(mount: str, folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``energy-auction ARGV`` with ``folder`` read-only for that process alone."""
    assert shutil.which("unshare"), "these tests need unshare (util-linux)"
    command = [sys.executable, "-m", "energy_auction.cli", *argv]
    namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, "sh", str(folder)]
    return subprocess.run([*namespace, *command], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", ["local", "token", "run-pipeline", "notices"])
def test_a_home_on_a_read_only_file_system_is_one_line(tmp_path: Path, command: str) -> None:
    # Given a home folder to be made on a file system that is read-only
    home = tmp_path / "home"

    # When any command is run on it
    done = on_read_only(READ_ONLY, tmp_path, command, "--home", str(home))

    # Then it stops with code 2 and one line naming the file it could not make, and no traceback
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("energy-auction: cannot use the "), done.stderr
    assert f"{home}/" in done.stderr
    assert "Read-only file system" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_token_is_still_minted_from_a_read_only_home_that_has_its_secret(tmp_path: Path) -> None:
    # Given a home with its secret, made read-only (a backup mounted for reading, say)
    home = tmp_path / "home"
    home.mkdir()
    (home / "jwt-secret").write_text("a-secret-of-enough-length-0123456789abcdef\n")

    # When a token is asked for, it is minted with that secret, and nothing is said
    done = on_read_only(READ_ONLY_COPY, home, "token", "--home", str(home))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.count(".") == 2

    # And starting the stack there is refused in one line naming the database
    done = on_read_only(READ_ONLY_COPY, home, "local", "--home", str(home), "--port", "0")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith(f"energy-auction: cannot use the order database {home}/orders.sqlite3: ")
    assert done.stderr.count("\n") == 1
