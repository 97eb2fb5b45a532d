"""Powertools Logger, Tracer and Metrics shared by the handlers.

Service name, log level and metrics namespace come from the POWERTOOLS_* variables the deployment
(or the local stack) sets; the defaults below apply when they are absent.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "energy-auction"
NAMESPACE = "EnergyAuction"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)
