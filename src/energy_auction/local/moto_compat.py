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
4. Speed, nothing else, measured on a batch of 100 orders per child (py-spy, the GIL's holder):
   - the Map's batch was copied whole for each of its items, twice (into the item selector's ``$``,
     and left on the item's stack, which each Task of the item copies again): each order cost a
     copy of its whole batch. The selector only reads it; nothing below its output reads the stack.
   - ``ResultPath`` parsed its JSONPath at each use (building a parser, yacc tables included):
     cached as the others are.
   - the interpreter copies the state data at each step with ``copy.deepcopy``; its values are
     JSON, copied directly now (anything else still by ``copy.deepcopy``): a quarter of its time.
   - a Program without TimeoutSeconds (a Map's item processor) and a Task without one ran in a
     thread of their own only to be joined at once: with hundreds of items in flight, each new
     thread waited for the GIL. They run in the calling thread; those with a timeout still do not.
   - :func:`serve` lets the engine answer the tasks' Lambda and SNS calls itself, in-process,
     instead of botocore building a request for moto to parse and answer.
5. A retry counted twice: a component's ``heap_key`` (where a frame keeps its state, such as a
   Retrier's attempt number) is made on first use, unguarded. Two Map items failing at once could
   both find none and make one each: the item whose key was replaced read no attempt number and
   started counting again, so it got a fourth attempt where ``MaxAttempts`` 2 allows three. The key
   is made under a lock now, once per component.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import sys
import threading
import types
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
_SERVED: dict[tuple[int, str], tuple[Any, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def serve(service: str, client: Any) -> None:
    """Have the interpreter's tasks call ``client`` (an object with the boto3 client's methods they
    use) for ``service`` while boto3's default session is the current one: the engine answers its
    Lambda and SNS tasks in-process, without botocore serialising a request for moto to parse."""
    import boto3

    session = boto3.DEFAULT_SESSION
    with _CLIENTS_LOCK:
        _SERVED[(id(session), service)] = (session, client)


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
            served = _SERVED.get((id(session), service))
            if served is not None and served[0] is session:
                return served[1]
            kept = _CLIENTS.get(key)
            if kept is None or kept[0] is not session:
                kept = (session, boto_client_for(region, service, state_credentials))
                _CLIENTS[key] = kept
            return kept[1]

    kept_client_for.moto_compat = True  # type: ignore[attr-defined]
    return kept_client_for


def forget_clients() -> None:
    """Drop the kept and served clients (an engine closing: its session and hooks go with it)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()
        _SERVED.clear()


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


def _path_parsers() -> list[Any]:
    """The interpreter's modules that parse a JSONPath each time they use one."""
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    return [json_path, result_path]


def _inline_worker() -> Any:
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (
        inline_item_processor_worker,
    )

    return inline_item_processor_worker.InlineItemProcessorWorker


def _eval_inline_input(self: Any, env_frame: Any) -> None:
    """An inline Map item's input, as moto's ``_eval_input`` makes it, without copying the Map's
    whole input for each item (twice: into the selector's ``$``, and left on the frame's stack, which
    every Task of the item copies again). The selector only reads it, and what it builds is copied."""
    if not self._parameters and not self._item_selector:
        return
    map_state_input = self._env.stack[-1]
    env_frame.states._states_data["input"] = map_state_input  # read by the selector, never written
    env_frame.stack.append(map_state_input)
    (self._item_selector or self._parameters).eval(env_frame)
    output_value = env_frame.stack.pop()
    env_frame.stack.pop()  # the Map's input: nothing below the selector's output reads it
    env_frame.stack.append(output_value)
    env_frame.states.reset(input_value=output_value)


_eval_inline_input.moto_compat = True  # type: ignore[attr-defined]


_INLINE = threading.local()
"""Per thread: whether the Task being evaluated has no timeout of its own (see _TaskThread)."""


class _TaskThread(threading.Thread):
    """The thread a Task's evaluation runs in (``execute_state.Thread``): it exists only so that the
    Task can be cut off at its TimeoutSeconds. For a Task without one (moto's default is 99,999,999 s,
    which nothing waits for), the evaluation runs in the calling thread instead."""

    def start(self) -> None:
        if getattr(_INLINE, "task", False):
            _INLINE.task = False  # only this thread: states evaluated inside it decide for themselves
            self.run()
        else:
            super().start()


def _inline_untimed(evaluate_with_timeout: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(evaluate_with_timeout)
    def evaluate(self: Any, env: Any) -> None:
        previous = getattr(_INLINE, "task", False)
        _INLINE.task = self.timeout.is_default_value()
        try:
            evaluate_with_timeout(self, env)
        finally:
            _INLINE.task = previous

    evaluate.moto_compat = True  # type: ignore[attr-defined]
    return evaluate


def _program_eval(eval_: Callable[..., None], run_states: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(eval_)
    def program_eval(self: Any, env: Any) -> None:
        if self.timeout_seconds is not None:
            eval_(self, env)  # in a thread, joined with the program's timeout
            return
        # No timeout to enforce (a Map's item processor): the thread would only be joined at once.
        env.next_state_name = self.start_at.start_at_name
        run_states(self, env)

    program_eval.moto_compat = True  # type: ignore[attr-defined]
    return program_eval


def _threads() -> tuple[Any, Any, Any]:
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
    from moto.stepfunctions.parser.asl.component.program import program
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state

    return program.Program, EvalComponent, execute_state


_SCALARS = (str, int, float, bool, type(None))


def _deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``copy.deepcopy`` for the interpreter's values: JSON (dicts, lists, scalars) is copied
    directly, anything else by ``copy.deepcopy``. JSON has no cycles, so no memo is needed."""
    kind = type(value)
    if kind is dict:
        return {key: _deepcopy(item) for key, item in value.items()}
    if kind is list:
        return [_deepcopy(item) for item in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value, memo)


_COPY = types.ModuleType("copy")
_COPY.__dict__.update({**copy.__dict__, "deepcopy": _deepcopy})


def _copying_modules() -> list[types.ModuleType]:
    """The interpreter's modules that ``import copy`` (to deep-copy state data at each step)."""
    prefix = "moto.stepfunctions.parser.asl."
    return [
        module
        for name, module in list(sys.modules.items())
        if name.startswith(prefix) and getattr(module, "copy", None) in (copy, _COPY)
    ]


_HEAP_KEY_LOCK = threading.Lock()


def _heap_key(self: Any) -> str:
    """``EvalComponent.heap_key``, made once whichever threads ask for it first (fix 5)."""
    key: str | None = getattr(self, "_EvalComponent__heap_key", None)
    if key is None:
        from moto.stepfunctions.parser.asl.component import eval_component

        with _HEAP_KEY_LOCK:
            key = getattr(self, "_EvalComponent__heap_key", None)
            if key is None:
                key = getattr(eval_component, "long_uid")()  # noqa: B009 (the module's import)
                self._EvalComponent__heap_key = key
    return key


_heap_key.moto_compat = True  # type: ignore[attr-defined]


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
    for module in _path_parsers():
        parse = getattr(module, "parse")  # noqa: B009 (the module's import, not its API)
        if not getattr(parse, "moto_compat", False):
            cached = functools.lru_cache(maxsize=4096)(parse)
            cached.moto_compat = True  # type: ignore[attr-defined]
            setattr(module, "parse", cached)  # noqa: B010
    for module in _copying_modules():
        module.copy = _COPY  # type: ignore[attr-defined]
    program, component, execute_state = _threads()
    if not getattr(program.eval, "moto_compat", False):
        # What Program.eval runs in its thread: EvalComponent.eval (Program's base class).
        program.eval = _program_eval(program.eval, component.eval)
    state = execute_state.ExecutionState
    if not getattr(state._evaluate_with_timeout, "moto_compat", False):
        state._evaluate_with_timeout = _inline_untimed(state._evaluate_with_timeout)
        execute_state.Thread = _TaskThread
    worker = _inline_worker()
    if not getattr(worker._eval_input, "moto_compat", False):
        worker._eval_input = _eval_inline_input
    if not getattr(component.heap_key.fget, "moto_compat", False):
        component.heap_key = property(_heap_key)
