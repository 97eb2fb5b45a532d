"""Run the package's state machine on moto's ASL interpreter, with the Lambda tasks in-process.

moto executes the ASL (Task, Choice, Wait, Distributed Map reading from S3, Retry, Catch) when
started with ``execute_state_machine``. Its Lambda tasks would run through Docker; instead the
engine answers each invoke by calling our handler in this process, the way Lambda would (JSON in,
JSON out, ``FunctionError`` on an exception), and each SNS publish of the state machine by putting
the message in the local topic (a queue on disk; a handler's own publishes on the AWS backend go
through moto and there too). From the topic a background thread delivers the messages to the
notifier handler, as the topic's subscription does on AWS: delivery never holds up a run, and what
is not delivered when the process ends is delivered by the next one. Transient run data (the work
bucket) lives in moto's S3.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.response import StreamingBody
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID

from energy_auction import workflow
from energy_auction.bootstrap import Container
from energy_auction.local import moto_compat
from energy_auction.local.delivery import NoticeDelivery
from energy_auction.local.lambdas import Handler, LocalFunction

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

REGION = "eu-west-1"
WORK_BUCKET = "energy-auction-work"
STATE_MACHINE = "energy-auction-pipeline"
FETCH_RESULTS = "energy-auction-fetch-results"
PROCESS_ORDER = "energy-auction-process-order"
TOPIC = "energy-auction-notifications"
_FIRST_POLL_SECONDS, _LAST_POLL_SECONDS = 0.02, 0.5
"""How often :meth:`PipelineEngine.wait` asks whether the run has ended: at first, and at most."""
CONCURRENCY_CAP = (2, 2)
"""Batches at once, and orders of a batch at once, at most (lower settings are kept): every
in-process invocation waits for the one before it (``local.lambdas``), so more concurrency only
adds interpreter threads contending for that lock and for the GIL. Measured with 2,000 ready
orders: 25 s at 2 x 2 against 40 s at the AWS defaults (40 x 10)."""


@dataclass
class RunSummary:
    """What one execution did: the JSON that ``energy-auction run-pipeline`` prints."""

    run_id: str
    status: str = "RUNNING"
    attempts: int = 0
    staged: int = 0
    """Orders the run took (FetchResults staged them); 0 until the market was ready."""
    orders: int = 0
    """Orders settled so far: accepted + rejected + failed."""
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    error: str | None = None
    cause: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    duration_seconds: float = 0.0
    notices_undelivered: int = 0
    """Notices of any run still waiting in the local topic when this run ended (Slack down or slow)."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _default_functions() -> tuple[Handler, Handler, Handler]:
    from energy_auction.handlers import fetch_results, notify, process_order

    return fetch_results.handler, process_order.handler, notify.handler


class PipelineEngine:
    """The local Step Functions: one state machine, executions on demand, tasks run in-process.

    Use as a context manager; while it is open, every botocore call in this process goes to moto.
    """

    def __init__(
        self,
        container: Container,
        *,
        fetch_results: Handler | None = None,
        process_order: Handler | None = None,
        notify: Handler | None = None,
        delivery_grace_seconds: float = 10.0,
    ) -> None:
        defaults = _default_functions() if None in (fetch_results, process_order, notify) else None
        settings = container.settings
        # The tasks' work store must point at the engine's bucket in moto's S3; components a caller
        # built or injected are kept.
        self.container = Container(
            replace(
                settings, work_bucket=settings.work_bucket or WORK_BUCKET, region=settings.region or REGION
            ),
            container.clock,
            **container.given(),
        )
        self.delivery_grace_seconds = delivery_grace_seconds
        self.region = self.container.settings.region or REGION
        arn = f"arn:aws:lambda:{self.region}:{DEFAULT_ACCOUNT_ID}:function:"
        self._functions = {
            arn + FETCH_RESULTS: LocalFunction(FETCH_RESULTS, fetch_results or defaults[0], 120),  # type: ignore[index]
            arn + PROCESS_ORDER: LocalFunction(PROCESS_ORDER, process_order or defaults[1], 60),  # type: ignore[index]
        }
        # SNS delivers to the notifier asynchronously: a worker thread does it here, so a slow Slack
        # never holds up the state machine or the API.
        self._notify = LocalFunction("energy-auction-notify", notify or defaults[2], 180, exclusive=False)  # type: ignore[index]
        self.delivery = NoticeDelivery(
            self.container.topic, self._notify, self.container.settings.notice_delivery_lease_seconds
        )
        self._runs: dict[str, RunSummary] = {}
        self._lock = threading.Lock()
        self._mock: Any = None
        self._sfn: SFNClient | None = None
        self.state_machine_arn = ""
        self.topic_arn = ""

    # -- lifecycle

    def __enter__(self) -> PipelineEngine:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        from energy_auction import bootstrap

        moto_compat.apply()
        bootstrap.use(self.container)  # the in-process handlers use this container
        self.delivery.start()
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        boto3.setup_default_session(region_name=self.region)
        # The interpreter's Lambda and SNS tasks are answered here, in-process; an SNS publish a
        # handler makes (the AWS backend on moto) is put in the local topic too.
        moto_compat.serve("lambda", _InProcessLambda(self))
        moto_compat.serve("sns", _InProcessTopic(self))
        events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]
        events.register("before-call.sns.Publish", self._deliver_notification)
        settings = self.container.settings
        s3 = boto3.client("s3", region_name=self.region)
        s3.create_bucket(
            Bucket=settings.work_bucket or WORK_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
        )
        self.topic_arn = boto3.client("sns", region_name=self.region).create_topic(Name=TOPIC)["TopicArn"]
        definition = workflow.render(
            {
                **workflow.tunables(settings, concurrency_cap=CONCURRENCY_CAP),
                "FetchResultsFunctionArn": self.function_arn(FETCH_RESULTS),
                "ProcessOrderFunctionArn": self.function_arn(PROCESS_ORDER),
                "NotificationTopicArn": self.topic_arn,
                "WorkBucketName": settings.work_bucket or WORK_BUCKET,
            }
        )
        self._sfn = boto3.client("stepfunctions", region_name=self.region)
        self.state_machine_arn = self._sfn.create_state_machine(
            name=STATE_MACHINE,
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{STATE_MACHINE}",
        )["stateMachineArn"]

    def close(self, grace_seconds: float = 5.0) -> None:
        """Stop; a notice being delivered gets ``grace_seconds`` to finish, or is delivered later."""
        from energy_auction import bootstrap

        self.delivery.stop(grace_seconds)
        bootstrap.use(None)
        if self._mock is None:
            return
        events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]
        events.unregister("before-call.sns.Publish", self._deliver_notification)
        self._mock.stop()
        self._mock = None
        moto_compat.forget_clients()

    def _execution_arn(self, run_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{run_id}"

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{DEFAULT_ACCOUNT_ID}:function:{name}"

    # -- executions

    def start_run(self) -> str:
        """Start an execution now (as the schedule does); returns its run id (the execution name)."""
        assert self._sfn is not None, "the engine is not open"
        run_id = f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._runs[run_id] = RunSummary(run_id)
        self._sfn.start_execution(stateMachineArn=self.state_machine_arn, name=run_id, input="{}")
        return run_id

    def stop_run(self, run_id: str) -> None:
        """Stop an execution, as StopExecution does on AWS: its Map starts no further child."""
        assert self._sfn is not None, "the engine is not open"
        self._sfn.stop_execution(executionArn=self._execution_arn(run_id))

    def wait(self, run_id: str, timeout: float | None = None) -> RunSummary:
        """Block until the run ends (or ``timeout`` seconds pass) and return its summary."""
        assert self._sfn is not None, "the engine is not open"
        arn = self._execution_arn(run_id)
        limit = timeout if timeout is not None else self.container.settings.pipeline_timeout_seconds + 60
        started = time.monotonic()
        pause = _FIRST_POLL_SECONDS
        while True:
            described = self._sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING" or time.monotonic() - started > limit:
                break
            time.sleep(pause)
            # Each DescribeExecution goes through botocore and moto (milliseconds of the GIL): a
            # long run is asked less often, a short one still ends within a few tens of ms.
            pause = min(_LAST_POLL_SECONDS, pause * 1.5)
        duration = round(time.monotonic() - started, 3)
        # The run's notices have been delivered as it went; give the last ones a moment, no more.
        undelivered = self.delivery.settle(self.delivery_grace_seconds)
        with self._lock:
            summary = self._runs[run_id]
            summary.status = described["status"]
            summary.error = described.get("error")
            summary.cause = described.get("cause")
            summary.duration_seconds = duration
            summary.notices_undelivered = undelivered
            return replace(summary)

    def run(self, timeout: float | None = None) -> RunSummary:
        """One execution, start to end."""
        return self.wait(self.start_run(), timeout)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The parent execution's history events."""
        assert self._sfn is not None
        arn = self._execution_arn(run_id)
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            if token:
                page = self._sfn.get_execution_history(executionArn=arn, maxResults=1000, nextToken=token)
            else:
                page = self._sfn.get_execution_history(executionArn=arn, maxResults=1000)
            events.extend(page["events"])  # type: ignore[arg-type]
            token = page.get("nextToken")
            if not token:
                return events

    # -- what Lambda and SNS would do

    def invoke(self, function_name: str, payload: bytes) -> dict[str, Any] | None:
        """Lambda's Invoke for one of the engine's functions (None for any other): the handler's
        answer as JSON, or ``FunctionError`` with the error's type and message, as Lambda answers."""
        name = function_name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        function = self._functions.get(self.function_arn(name))
        if function is None:
            return None
        event = json.loads(payload or b"{}")  # Lambda's runtime parses numbers as floats too
        answer: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
        try:
            result = function.invoke(event)
            body = json.dumps(result).encode()
            self._tally(function.name, event, None, result)
        except Exception as err:
            self._tally(function.name, event, err, None)
            body = json.dumps({"errorType": type(err).__name__, "errorMessage": str(err)}).encode()
            answer["FunctionError"] = "Unhandled"
        answer["Payload"] = StreamingBody(io.BytesIO(body), len(body))
        return answer

    def progress(self, run_id: str) -> RunSummary:
        """The run's summary so far (a copy): orders staged and settled while it runs."""
        with self._lock:
            return replace(self._runs.get(run_id) or RunSummary(run_id))

    def _tally(self, function: str, event: dict[str, Any], error: Exception | None, answer: Any) -> None:
        run_id = str(event.get("run_id", ""))
        with self._lock:
            summary = self._runs.setdefault(run_id, RunSummary(run_id))
            if function == FETCH_RESULTS:
                if "action" not in event:  # not the redelivery or a batch's claim
                    summary.attempts += 1
                    if isinstance(answer, dict) and answer.get("results"):
                        summary.staged = int(answer.get("count", 0))
                return
            if event.get("action") == "release":
                summary.failed += 1
            elif error is None:
                summary.accepted += 1
            elif type(error).__name__ == "OrderRejected":
                summary.rejected += 1
            summary.orders = summary.accepted + summary.rejected + summary.failed

    def _deliver_notification(self, params: dict[str, Any], **_: Any) -> None:
        """A handler's SNS Publish (the AWS backend on moto): the message is put in the local topic
        (on disk) before moto answers, so a publish that succeeded is never lost."""
        body = params.get("body")
        fields: dict[str, Any] = body if isinstance(body, dict) else {}
        kind = next(
            (
                fields.get(key.replace(".Name", ".Value.StringValue"))
                for key, value in fields.items()
                if key.startswith("MessageAttributes.entry.") and key.endswith(".Name") and value == "kind"
            ),
            None,
        )
        self.publish(fields.get("Subject"), fields.get("Message", ""), kind)

    def publish(self, subject: str | None, message: str, kind: str | None) -> None:
        """Put a message in the local topic; the delivery thread takes it from there."""
        self.container.topic.publish(subject, message, kind)
        self.delivery.wake()


class _InProcessLambda:
    """The Lambda client of the interpreter's tasks: the engine's functions run in this process
    (what the invocation would do on AWS), any other goes to moto."""

    def __init__(self, engine: PipelineEngine) -> None:
        self._engine = engine
        self._moto: Any = None

    def invoke(self, *, FunctionName: str, Payload: bytes = b"{}", **params: Any) -> dict[str, Any]:
        answer = self._engine.invoke(FunctionName, Payload)
        if answer is not None:
            return answer
        if self._moto is None:
            self._moto = boto3.client("lambda", region_name=self._engine.region)
        return dict(self._moto.invoke(FunctionName=FunctionName, Payload=Payload, **params))


class _InProcessTopic:
    """The SNS client of the interpreter's tasks: a publish goes to the local topic (on disk)
    before the task goes on, as SNS has stored a message when Publish answers."""

    def __init__(self, engine: PipelineEngine) -> None:
        self._engine = engine

    def publish(
        self,
        *,
        Message: str,
        Subject: str | None = None,
        MessageAttributes: dict[str, dict[str, str]] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        kind = (MessageAttributes or {}).get("kind", {}).get("StringValue")
        self._engine.publish(Subject, Message, kind)
        return {"MessageId": str(uuid.uuid4())}
