"""One fix to moto's ASL interpreter (5.2.5), applied by the local pipeline engine.

Each Map worker of the interpreter evaluates its items by recursion: ``_eval_pool`` runs one job,
takes the next and calls itself for it, as its last statement. A worker therefore dies with
``RecursionError`` after about 970 items, the Map never finishes, and a run of more than
~970 x MaxConcurrency orders hangs until its execution timeout. :func:`apply` turns that tail call
into a loop without copying moto's code: while a worker evaluates its pool, its recursive call only
records the next job, and the loop evaluates it after the current call returns. What a worker does
for each job is unchanged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
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


def apply() -> None:
    """Make every Map worker loop over its items instead of recursing (idempotent)."""
    for worker in map_workers():
        eval_pool = worker.__dict__.get("_eval_pool")
        if eval_pool is not None and not getattr(eval_pool, "moto_compat", False):
            worker._eval_pool = _looping(eval_pool)  # type: ignore[attr-defined]
