"""Fixes to moto's ASL interpreter (5.2.5), applied by the local pipeline engine (:func:`apply`).

1. Each Map worker of the interpreter evaluates its items by recursion: ``_eval_pool`` runs one job,
   takes the next and calls itself for it, as its last statement. A worker therefore dies with
   ``RecursionError`` after about 970 items, the Map never finishes, and a run of more than
   ~970 x MaxConcurrency orders hangs until its execution timeout. The tail call becomes a loop,
   without copying moto's code: while a worker evaluates its pool, its recursive call only records
   the next job, and the loop evaluates it after the current call returns.
2. Speed, nothing else: every Lambda, SNS or S3 task built a new boto3 client (about a third of a
   local run's CPU), and every JSONPath was parsed anew on each use (a fifth). Clients are kept per
   boto3 session (each engine has its own, with its own event hooks) whatever credentials the task
   passes (moto ignores them), and parsed paths are cached.
3. Start-up, nothing else: the interpreter's Batch task takes one enum from ``moto.batch.utils``,
   and importing that ran ``moto/batch/__init__.py``, which loads moto's Batch backend and with it
   EC2's (instance types, AMIs, regions: about 1.7 s and 40 MB, a third of a ``run-pipeline``).
   The interpreter is imported with ``moto.batch`` as a bare package whose ``__init__`` has not
   run; ``moto.batch.utils`` is the real module. A later ``import moto.batch`` loads the real one.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_PENDING = threading.local()
"""Per thread: id(worker) -> the (job, frame) its recursive call asked for, or None."""


def _looping(eval_pool: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(eval_pool)
    def looping_eval_pool(self: Any, job: Any, worker_frame: Any) -> None:
        pending: dict[int, tuple[Any, Any] | None] = _PENDING.__dict__.setdefault("workers", {})
        key = id(self)
        if key in pending:  # the tail call from inside eval_pool: let the loop below run it
            pending[key] = (job, worker_frame)
            return
        following: tuple[Any, Any] | None = (job, worker_frame)
        try:
            while following is not None:
                pending[key] = None
                eval_pool(self, *following)
                following = pending[key]
        finally:
            del pending[key]

    looping_eval_pool.moto_compat = True  # type: ignore[attr-defined]
    return looping_eval_pool


def map_workers() -> list[type]:
    """The interpreter's Map worker classes that define their own recursive ``_eval_pool``."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import iteration_worker
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (
        distributed_item_processor_worker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.iterator import (
        distributed_iterator_worker,
    )

    return [
        iteration_worker.IterationWorker,
        distributed_item_processor_worker.DistributedItemProcessorWorker,
        distributed_iterator_worker.DistributedIteratorWorker,
    ]


_CLIENTS: dict[tuple[int, str, str], tuple[Any, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def _kept_client(boto_client_for: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(boto_client_for)
    def kept_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        import boto3

        # moto 5.2.5 builds every task's client alike: it passes the task's credentials (each task
        # gets the execution's role) and ignores them. So the client is shared whatever they are;
        # before, a truthy credentials object made every task build its own.
        session = boto3.DEFAULT_SESSION
        key = (id(session), region, service)
        with _CLIENTS_LOCK:
            kept = _CLIENTS.get(key)
            if kept is None or kept[0] is not session:
                kept = (session, boto_client_for(region, service, state_credentials))
                _CLIENTS[key] = kept
            return kept[1]

    kept_client_for.moto_compat = True  # type: ignore[attr-defined]
    return kept_client_for


def forget_clients() -> None:
    """Drop the kept clients (an engine closing: its session and hooks go with it)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


def _client_users() -> list[Any]:
    """The interpreter's modules that build a client for each task they run."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval import (
        resource_eval_s3 as item_reader,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval import (
        resource_eval_s3 as result_writer,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sns,
    )

    return [lambda_eval_utils, state_task_service_sns, item_reader, result_writer]


@contextmanager
def _batch_backend_left_out() -> Iterator[None]:
    """While it lasts, ``import moto.batch.utils`` does not load the Batch and EC2 backends (fix 3)."""
    if "moto.batch" in sys.modules:
        yield
        return
    spec = importlib.util.find_spec("moto.batch")
    if spec is None:  # a moto without Batch: nothing to leave out
        yield
        return
    bare = importlib.util.module_from_spec(spec)  # the package, with its __path__, not executed
    sys.modules["moto.batch"] = bare
    try:
        yield
    finally:
        if sys.modules.get("moto.batch") is bare:
            del sys.modules["moto.batch"]


def apply() -> None:
    """Apply the fixes (idempotent)."""
    with _batch_backend_left_out():
        import moto.stepfunctions.parser.models  # noqa: F401 (the whole interpreter, imported now)
    for worker in map_workers():
        eval_pool = worker.__dict__.get("_eval_pool")
        if eval_pool is not None and not getattr(eval_pool, "moto_compat", False):
            worker._eval_pool = _looping(eval_pool)  # type: ignore[attr-defined]
    for module in _client_users():
        if not getattr(module.boto_client_for, "moto_compat", False):
            module.boto_client_for = _kept_client(module.boto_client_for)
    from moto.stepfunctions.parser.asl.utils import json_path

    parse = getattr(json_path, "parse")  # noqa: B009 (the module's import, not its API)
    if not getattr(parse, "moto_compat", False):
        cached = functools.lru_cache(maxsize=4096)(parse)
        cached.moto_compat = True  # type: ignore[attr-defined]
        setattr(json_path, "parse", cached)  # noqa: B010
