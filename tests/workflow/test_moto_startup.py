"""The local engine's start-up fix to moto (local/moto_compat, fix 3): its interpreter is imported
without moto's Batch and EC2 backends, which took a third of a run-pipeline's time, and Batch
still loads whole for whoever asks for it later. In a fresh interpreter, as each command starts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from energy_auction.local import moto_compat

    moto_compat.apply()
    import moto.stepfunctions.parser.models  # what moto imports at the engine's first state machine
    loaded = sorted(name for name in ("moto.batch", "moto.batch.models", "moto.ec2") if name in sys.modules)
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_batch,
    )
    from moto.batch import batch_backends
    from moto.batch.utils import JobStatus
    print(json.dumps({
        "loaded_by_the_interpreter": loaded,
        "batch_backends": type(batch_backends).__name__,
        "same_job_status": state_task_service_batch.JobStatus is JobStatus,
    }))
    """
)


def test_the_interpreter_loads_without_the_batch_and_ec2_backends() -> None:
    # When a fresh process imports moto's interpreter the way the engine does
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    report = json.loads(done.stdout)

    # Then neither backend was loaded, and a later import of moto.batch is the whole package
    assert report == {
        "loaded_by_the_interpreter": [],
        "batch_backends": "BackendDict",
        "same_job_status": True,
    }
