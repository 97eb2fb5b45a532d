"""The CDK app: the application stack (one per stage) and the delivery pipeline stack."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
LAMBDA_LOCK = REPO_ROOT / "requirements" / "lambda.lock"
