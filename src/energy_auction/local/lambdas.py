"""Run Lambda handlers in-process, one invocation at a time per function, as a warm Lambda would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


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
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalFunction:
    """A handler run like a Lambda function with reserved concurrency 1.

    Powertools' resolver and Logger keep per-invocation state on module objects (as Lambda runs
    one invocation per process at a time), so invocations of one function are serialised.
    """

    def __init__(self, name: str, handler: Handler, timeout_seconds: float = 30.0) -> None:
        self.name = name
        self._handler = handler
        self._timeout = timeout_seconds
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            return self._handler(event, LocalLambdaContext(self.name, self._timeout))
