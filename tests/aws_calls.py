"""Record every AWS API call made in this process, and which Lambda handler made it.

A botocore event hook sees each call once, with the parameters its caller gave, before moto (or
AWS) answers it. It is registered the way moto registers its own stub: in botocore's
``BUILTIN_HANDLERS``, so every session created from now on has it (the clients the adapters build
on boto3's default session, and the ``boto3.session.Session()`` that Powertools Parameters builds
for Secrets Manager), and on boto3's default session if that exists already. Clients built before
this module was imported, on a session other than the default one, are not seen: start recording
before the code under test builds its clients (Powertools keeps its providers until
``parameters.clear_caches()``).

A call is attributed to the handler whose ``handler`` function is on the calling thread's stack
(``energy_auction.handlers.<name>``), however it was invoked: directly by a test, by the local
pipeline engine on moto's Step Functions threads, by the notice delivery thread, or by the local
gateway; a call a worker thread makes for a task a handler submitted to a ``ThreadPoolExecutor``
(the DynamoDB claim's updates) is the handler's too (``ThreadPoolExecutor.submit`` is wrapped to
carry the submitter over). Calls made outside any handler (test setup, moto's interpreter) have
``function`` None.

Usage::

    with record_aws_calls() as calls:
        process_order.handler(event, context)
    assert [c.operation for c in calls.of("process_order")] == ["GetItem", "PutObject", "UpdateItem"]
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import boto3
from botocore.handlers import BUILTIN_HANDLERS

HANDLERS_PACKAGE = "energy_auction.handlers."
_EVENT = "before-parameter-build"
_SEEN = "tests.aws_calls.recorded"
"""Marks a call's request context once recorded: a session may hold the hook twice (its built-in
handlers, and the registration on boto3's default session)."""


@dataclass(frozen=True)
class AwsCall:
    """One API call: who made it, to which service and operation, with which parameters."""

    function: str | None
    """The handler module that made the call (``process_order``), or None outside any handler."""
    service: str
    """The service's IAM prefix (its signing name): ``dynamodb``, ``s3``, ``sns``, ``states``."""
    operation: str
    """The API operation: ``TransactWriteItems``, ``PutObject``."""
    region: str
    params: Mapping[str, Any] = field(repr=False)
    """The parameters as the caller gave them (a shallow copy)."""
    scenario: str | None = None
    """What the test was doing (``AwsCallRecorder.scenario``), for messages."""

    def __str__(self) -> str:
        where = f" in {self.scenario!r}" if self.scenario else ""
        return f"{self.function or '(no handler)'}: {self.service}.{self.operation}{where}"


class AwsCallRecorder:
    """The calls recorded while a :func:`record_aws_calls` block runs, in the order they were made."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()
        self._scenario: str | None = None

    def __iter__(self) -> Iterator[AwsCall]:
        with self._lock:
            return iter(list(self.calls))

    def __len__(self) -> int:
        with self._lock:
            return len(self.calls)

    def of(self, function: str) -> list[AwsCall]:
        """The calls one handler made."""
        return [call for call in self if call.function == function]

    @contextmanager
    def scenario(self, name: str) -> Iterator[list[AwsCall]]:
        """Label the calls made inside the block; yields them (filled in as the block runs)."""
        start = len(self)
        previous, self._scenario = self._scenario, name
        made: list[AwsCall] = []
        try:
            yield made
        finally:
            self._scenario = previous
            with self._lock:
                made.extend(self.calls[start:])

    def _add(self, call: AwsCall) -> None:
        with self._lock:
            self.calls.append(replace(call, scenario=self._scenario))


_recorders: list[AwsCallRecorder] = []
_recorders_lock = threading.Lock()


_submitted_by = threading.local()
"""On a pool's worker thread while it runs a task: the handler that submitted the task."""


def _running_handler(frame: FrameType | None) -> str | None:
    """The innermost ``energy_auction.handlers.<name>.handler`` on the stack, as ``<name>``; on a
    pool's worker thread without one, the handler that submitted its task."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "handler" and module.startswith(HANDLERS_PACKAGE):
            return str(module).removeprefix(HANDLERS_PACKAGE)
        frame = frame.f_back
    submitter: str | None = getattr(_submitted_by, "function", None)
    return submitter


_original_submit = ThreadPoolExecutor.submit


def _submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
    """``ThreadPoolExecutor.submit``, the task run with its submitter's handler noted."""
    submitter = _running_handler(sys._getframe(1))

    def attributed(*task_args: Any, **task_kwargs: Any) -> Any:
        previous = getattr(_submitted_by, "function", None)
        _submitted_by.function = submitter
        try:
            return fn(*task_args, **task_kwargs)
        finally:
            _submitted_by.function = previous

    return _original_submit(self, attributed, *args, **kwargs)


def _record(params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
    with _recorders_lock:
        recorders = list(_recorders)
    if not recorders or context is None or context.get(_SEEN):
        return
    context[_SEEN] = True
    call = AwsCall(
        function=_running_handler(sys._getframe(1)),
        service=model.service_model.signing_name,
        operation=model.name,
        region=str(context.get("client_region") or ""),
        params=dict(params),
    )
    for recorder in recorders:
        recorder._add(call)


def _install() -> None:
    """Put the hook into every botocore session made from now on, and into boto3's default one;
    carry a pool task's submitter over to its worker thread."""
    ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign, assignment]
    if (_EVENT, _record) not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append((_EVENT, _record))
    if boto3.DEFAULT_SESSION is not None:
        boto3.DEFAULT_SESSION.events.register(_EVENT, _record, unique_id=_SEEN)


_install()


@contextmanager
def record_aws_calls() -> Iterator[AwsCallRecorder]:
    """Record the AWS calls made (by any thread of this process) while the block runs."""
    _install()  # boto3's default session may have been replaced since (the engine does that)
    recorder = AwsCallRecorder()
    with _recorders_lock:
        _recorders.append(recorder)
    try:
        yield recorder
    finally:
        with _recorders_lock:
            _recorders.remove(recorder)
