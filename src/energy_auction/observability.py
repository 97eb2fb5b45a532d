"""Powertools Logger, Tracer and Metrics of the handlers.

Service name, log level and metrics namespace come from the POWERTOOLS_* variables the deployment
(or the local stack) sets; the defaults below apply when they are absent. The Tracer is built by
the first handler that asks for it (``@tracer().capture_lambda_handler``, at that handler's
import): it imports the X-Ray SDK and botocore, which the authorizer's cold start does without.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics

from energy_auction.deployment import SERVICE

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE = "EnergyAuction"
PATCHED_MODULES = ("botocore",)

logger = Logger(service=SERVICE)

_METRICS: dict[str, EphemeralMetrics] = {}


def metrics_for(function: str) -> EphemeralMetrics:
    """The metrics of one function, its own: ``Metrics`` instances share one set of metrics per
    process, so a function that flushed (``log_metrics``) while another ran in the same process
    (the local stack runs the notifier beside the pipeline) took the other's metrics with it, and
    the other's flush then failed with "Must contain at least one metric". Each function runs one
    invocation at a time (on Lambda, and locally too), so its metrics are its invocation's own."""
    if function not in _METRICS:
        _METRICS[function] = EphemeralMetrics(service=SERVICE, namespace=NAMESPACE)
    return _METRICS[function]


def every_metrics() -> list[EphemeralMetrics]:
    """Each function's metrics made so far (tests clear them)."""
    return list(_METRICS.values())


@cache
def tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    # Only botocore is patched: the handlers make no other traced calls (Slack goes over urllib),
    # and patching every supported module would import requests and more at each cold start.
    return Tracer(service=SERVICE, patch_modules=PATCHED_MODULES)
