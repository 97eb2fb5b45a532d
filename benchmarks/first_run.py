"""``make bench-first-run``: a newcomer's first ``make run``, from a fresh clone to ``GET /health``
200, the old way and the new way side by side in one run; writes a JSON report.

- ``old``: what ``make run`` did before issue 8. A venv with pip, pip installing the whole of
  ``requirements/dev.lock`` (``--require-hashes --quiet``) and then the package, then
  ``energy-auction local``. The recipe is replayed here with the clone's own dev.lock, so both
  ways install the same versions.
- ``new``: ``make run`` of the cloned commit, as it is.

Each run clones this checkout's committed HEAD into a new temporary folder, gives the install
empty pip and uv caches of its own (``--cache cold``, the default: nothing downloaded before
helps), starts the command with ``PORT`` set to a free port, and polls ``/health`` every 0.1 s
until it answers 200; then it stops the process group. The runs alternate old, new, old, new...
Only the standard library is used: it runs before any ``.venv/`` exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("old", "new")
OLD_RECIPE = """set -e
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
touch .venv/.installed
exec .venv/bin/energy-auction local
"""
"""The install and start that ``make run`` ran before issue 8 (its Makefile, step for step)."""
INSTALLED_STAMP = {"old": ".venv/.installed", "new": ".venv/.installed-local"}
TARGET_RATIO = 0.5
"""The new first run must take at most half the time of the old one."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"first_run: {name} is not on PATH")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _venv_size_mb(venv: Path) -> float:
    total = sum(path.lstat().st_size for path in venv.rglob("*") if path.is_file() and not path.is_symlink())
    return round(total / 2**20, 1)


def _packages(venv: Path) -> int:
    return len(list(venv.glob("lib/python*/site-packages/*.dist-info")))


def measure(way: str, commit: str, work: Path, cache: str, timeout: float) -> dict[str, Any]:
    """One first run: clone, install and start the local stack ``way``, until /health answers."""
    clone = work / f"{way}-{time.monotonic_ns()}"
    port = _free_port()
    # As a newcomer's shell: no active venv, not inside the make that started this script, and
    # none of its command-line variables (make exports them: ARGS=... would reach make run).
    dropped = {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "BENCH_ARGS"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(PORT=str(port), PYTHON=sys.executable)
    if cache == "cold":
        env.update(PIP_CACHE_DIR=str(clone) + "-cache/pip", UV_CACHE_DIR=str(clone) + "-cache/uv")
    command = [_tool("make"), "run"] if way == "new" else [_tool("bash"), "-c", OLD_RECIPE]
    git = _tool("git")

    started = time.perf_counter()
    subprocess.run([git, "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run([git, "-C", str(clone), "checkout", "--quiet", commit], check=True)
    cloned = time.perf_counter() - started
    log = (work / f"{clone.name}.log").open("wb")
    process = subprocess.Popen(
        command, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    installed: float | None = None
    healthy: float | None = None
    try:
        while time.perf_counter() - started < timeout and process.poll() is None:
            now = time.perf_counter() - started
            if installed is None and (clone / INSTALLED_STAMP[way]).exists():
                installed = now
            if _healthy(port):
                healthy = time.perf_counter() - started
                break
            time.sleep(0.1)
    finally:
        _stop(process)
        log.close()
    output = (work / f"{clone.name}.log").read_text(errors="replace").splitlines()
    if healthy is None:
        tail = "\n".join(output[-20:])
        raise RuntimeError(f"{way}: no /health within {timeout:.0f} s (exit {process.returncode}):\n{tail}")
    result = {
        "way": way,
        "clone_s": round(cloned, 2),
        "installed_s": None if installed is None else round(installed, 1),
        "health_s": round(healthy, 1),
        "start_s": None if installed is None else round(healthy - installed, 1),
        "venv_mb": _venv_size_mb(clone / ".venv"),
        "packages": _packages(clone / ".venv"),
        "lines_printed": len(output),
    }
    shutil.rmtree(clone, ignore_errors=True)
    shutil.rmtree(str(clone) + "-cache", ignore_errors=True)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for way in WAYS:
        mine = [run for run in runs if run["way"] == way]
        summary[way] = {
            key: statistics.median(run[key] for run in mine)
            for key in ("health_s", "installed_s", "start_s", "venv_mb", "packages", "lines_printed")
            if all(run[key] is not None for run in mine)
        }
    ratio = summary["new"]["health_s"] / summary["old"]["health_s"]
    summary["new_over_old"] = round(ratio, 3)
    summary["target"] = f"new <= {TARGET_RATIO} x old"
    summary["target_met"] = ratio <= TARGET_RATIO
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "first-run.json")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way, alternating (default 1)")
    parser.add_argument(
        "--cache",
        choices=["cold", "warm"],
        default="cold",
        help="cold: empty pip and uv caches per run (default); warm: the user's own caches",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per run")
    args = parser.parse_args()

    git = _tool("git")
    commit = subprocess.run(
        [git, "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [git, "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not measured; the clone is of HEAD", file=sys.stderr)
    runs = []
    with tempfile.TemporaryDirectory(prefix="first-run-") as work:
        for n in range(args.repeat):
            for way in WAYS:
                print(f"[{n + 1}/{args.repeat}] {way}: clone, install, start ...", flush=True)
                run = measure(way, commit, Path(work), args.cache, args.timeout)
                print(
                    f"    /health 200 after {run['health_s']} s (installed at {run['installed_s']} s); "
                    f"{run['packages']} packages, {run['venv_mb']} MB",
                    flush=True,
                )
                runs.append(run)
    summary = summarise(runs)
    report = {
        "what": "fresh clone to GET /health 200: the old full dev-lock install vs make run",
        "commit": commit,
        "cache": args.cache,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": runs,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"old {summary['old']['health_s']} s, new {summary['new']['health_s']} s "
        f"(new/old {summary['new_over_old']}; target met: {summary['target_met']}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
