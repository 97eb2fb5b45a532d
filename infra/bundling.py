"""The Lambda functions' third-party dependencies, built for python3.13 on arm64 without Docker.

pip installs the manylinux aarch64 wheels pinned (with hashes) in requirements/lambda.lock into
``build/lambda-layer/<digest>/python``, the layout of a Lambda layer. The folder is keyed by the
lock file and the target platform, so it is built once and reused by every synth until the lock
changes. ``python -m infra.bundling`` (``make bundle``) builds it ahead of time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infra import LAMBDA_LOCK, REPO_ROOT

PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_aarch64"
CACHE_ROOT = REPO_ROOT / "build" / "lambda-layer"


def lock_digest(lock: Path = LAMBDA_LOCK) -> str:
    """Identifies a build: the lock file's content and the platform it targets."""
    digest = hashlib.sha256(lock.read_bytes())
    digest.update(f"\0cp{PYTHON_VERSION}\0{PLATFORM}".encode())
    return digest.hexdigest()[:40]


def dependencies_dir(lock: Path = LAMBDA_LOCK, cache_root: Path = CACHE_ROOT) -> Path:
    """The layer folder (holding ``python/``) for ``lock``; built on first use, then reused."""
    target = cache_root / lock_digest(lock)
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_root))
    try:
        subprocess.run(  # noqa: S603 (fixed arguments; the lock pins every file by hash)
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-qq",  # errors only
                "--disable-pip-version-check",
                "--no-warn-conflicts",  # the installing venv's own packages are irrelevant here
                "--no-compile",
                "--require-hashes",
                "--only-binary=:all:",
                "--implementation=cp",
                f"--python-version={PYTHON_VERSION}",
                f"--platform={PLATFORM}",
                f"--target={staging / 'python'}",
                f"--requirement={lock}",
            ],
            check=True,
        )
        shutil.rmtree(staging / "python" / "bin", ignore_errors=True)  # console scripts: unused
        try:
            staging.rename(target)  # atomic: a folder under its final name is always complete
        except OSError:
            if not target.is_dir():  # another process finished the same build first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_stale(cache_root, keep=target)
    return target


def _remove_stale(cache_root: Path, keep: Path) -> None:
    for entry in cache_root.iterdir():
        if entry.is_dir() and entry != keep and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)


if __name__ == "__main__":
    print(dependencies_dir())
