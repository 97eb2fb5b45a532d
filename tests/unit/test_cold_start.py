"""What each Lambda handler imports at a cold start, imported as on Lambda (tracing on, the X-Ray
SDK on its Lambda path): only the libraries its invocations use, since every module imported there
is paid again at each cold start (README, "Benchmarks" and design notes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import energy_auction

SRC = Path(energy_auction.__file__).parent.parent
TRACED = ("api", "fetch_results", "process_order", "notify")
WATCHED = ("requests", "botocore.client", "aws_xray_sdk", "pydantic_settings", "energy_auction.openapi")


def imported_on_lambda(handler: str, tmp_path: Path) -> dict[str, bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    env.update(LAMBDA_TASK_ROOT=str(SRC), AWS_LAMBDA_FUNCTION_NAME=handler, AWS_REGION="eu-west-1")
    code = (
        f"import json, sys, energy_auction.handlers.{handler}; "
        f"print(json.dumps({{m: m in sys.modules for m in {WATCHED!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    found: dict[str, bool] = json.loads(done.stdout)
    return found


def test_the_authorizer_imports_neither_a_botocore_client_nor_the_xray_sdk(tmp_path: Path) -> None:
    found = imported_on_lambda("authorizer", tmp_path)
    assert not any(found.values()), found


def test_traced_handlers_patch_botocore_and_import_no_http_library_they_do_not_use(tmp_path: Path) -> None:
    for handler in TRACED:
        found = imported_on_lambda(handler, tmp_path)
        assert found["aws_xray_sdk"], (handler, found)
        assert found["botocore.client"], (handler, found)
        assert not found["requests"], f"{handler} imports requests at a cold start"
        assert not found["pydantic_settings"], (handler, found)
        assert not found["energy_auction.openapi"], (handler, found)
