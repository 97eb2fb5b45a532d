"""Run Lambda handlers in-process, one invocation at a time per function, as a warm Lambda would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]

LOCAL_ACCOUNT = "000000000000"
"""The stand-in account id in the local stack's ARNs (no real account is involved)."""


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.invoked_function_arn = f"arn:aws:lambda:local:{LOCAL_ACCOUNT}:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# Lambda runs one invocation per process at a time, and Powertools keeps per-invocation state on
# module objects (the resolver's current event, the Logger's keys) that all our handlers share in
# this one process. So every in-process invocation, of any function, takes this lock.
_ONE_INVOCATION_AT_A_TIME = threading.Lock()


class LocalFunction:
    """A handler run like a Lambda function: one invocation at a time in this process.

    ``exclusive=False`` lets a slow function (the notifier, waiting on Slack's Retry-After) run
    beside the others rather than stall them; its log lines may then carry another's keys.
    """

    def __init__(
        self, name: str, handler: Handler, timeout_seconds: float = 30.0, exclusive: bool = True
    ) -> None:
        self.name = name
        self._handler = handler
        self._timeout = timeout_seconds
        self._lock = _ONE_INVOCATION_AT_A_TIME if exclusive else threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            return self._handler(event, LocalLambdaContext(self.name, self._timeout))
