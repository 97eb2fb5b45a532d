"""The auction pipeline's state machine: ONE Amazon States Language template in this package.

CDK deploys it with ``DefinitionBody.from_file`` and ``definition_substitutions``; the local stack
renders the same file with :func:`render` and runs it on moto's ASL interpreter. ``${Name}``
placeholders stand for ARNs and tunables; numeric ones are unquoted, so the file is JSON only
after substitution.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from energy_auction.settings import Settings

ASL_PATH = Path(__file__).with_name("pipeline.asl.json")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def template() -> str:
    return ASL_PATH.read_text()


def placeholders() -> set[str]:
    """The substitution names the template uses."""
    return set(_PLACEHOLDER.findall(template()))


def render(values: Mapping[str, object]) -> dict[str, Any]:
    """The state machine definition with every placeholder replaced (as CloudFormation's Fn::Sub does).

    Raises
    ------
    KeyError
        A placeholder has no value, or a value names no placeholder.
    """
    names = placeholders()
    missing, unknown = names - set(values), set(values) - names
    if missing or unknown:
        raise KeyError(f"substitutions missing: {sorted(missing)}; unknown: {sorted(unknown)}")
    definition: dict[str, Any] = json.loads(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template()))
    return definition


def tunables(
    settings: Settings,
    *,
    execution_type: str = "STANDARD",
    batch_task_timeout_seconds: int | None = None,
    concurrency_cap: tuple[int, int] | None = None,
) -> dict[str, object]:
    """The non-ARN substitutions, from the settings.

    The AWS deployment passes EXPRESS children, and cuts a batch's ClaimBatch and TallyBatch short
    (``batch_task_timeout_seconds``): they run on the function that also stages whole runs, whose
    timeout is minutes. The local stack leaves them the execution's timeout: its in-process
    functions take one invocation at a time, so a batch's task may queue behind many others. For
    the same reason it caps the Map's concurrency (``concurrency_cap``: batches at once, orders of a
    batch at once): more would only add threads waiting for that one invocation at a time.
    """
    batches, orders = concurrency_cap or (
        settings.pipeline_max_concurrency,
        settings.pipeline_batch_concurrency,
    )
    return {
        "BatchTaskTimeoutSeconds": batch_task_timeout_seconds or settings.pipeline_timeout_seconds,
        "WorkPrefix": settings.work_prefix,
        "MapExecutionType": execution_type,
        "MapMaxConcurrency": min(batches, settings.pipeline_max_concurrency),
        "BatchMaxConcurrency": min(orders, settings.pipeline_batch_concurrency),
        "MaxAttempts": settings.pipeline_max_attempts,
        "RetrySeconds": settings.pipeline_retry_seconds,
        "ExecutionTimeoutSeconds": settings.pipeline_timeout_seconds,
        "TaskRetryIntervalSeconds": settings.pipeline_task_retry_interval_seconds,
        "TaskRetryMaxAttempts": settings.pipeline_task_retry_max_attempts,
        "TaskRetryBackoffRate": settings.pipeline_task_retry_backoff_rate,
    }
