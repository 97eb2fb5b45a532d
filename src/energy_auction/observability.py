"""Powertools Logger, Tracer and Metrics shared by the handlers.

Service name, log level and metrics namespace come from the POWERTOOLS_* variables the deployment
(or the local stack) sets; the defaults below apply when they are absent. The Tracer is built by
the first handler that asks for it (``@tracer().capture_lambda_handler``, at that handler's
import): it imports the X-Ray SDK and botocore, which the authorizer's cold start does without.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

from energy_auction.deployment import SERVICE

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE = "EnergyAuction"
PATCHED_MODULES = ("botocore",)

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)


@cache
def tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    # Only botocore is patched: the handlers make no other traced calls (Slack goes over urllib),
    # and patching every supported module would import requests and more at each cold start.
    return Tracer(service=SERVICE, patch_modules=PATCHED_MODULES)
