"""CDK entry point: ``cdk synth -c stage=dev`` (see cdk.json). Needs no AWS credentials or Docker.

Synthesizes the application stack of the ``stage`` context value (default dev), for ``make
deploy``, and the delivery pipeline stack, which deploys dev and, after approval, prod itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from energy_auction.deployment import stack_name
from infra import REPO_ROOT
from infra.config import StageConfig
from infra.delivery import DeliveryPipelineStack
from infra.stack import EnergyAuctionStack


def cdk_json_context() -> dict[str, Any]:
    """The context of cdk.json (feature flags, defaults), which the CDK CLI passes to the app."""
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return context


def build(app: App) -> App:
    """Every stack of the app, with cdk-nag's AWS Solutions checks as a validation plugin."""
    config = StageConfig.from_context(app.node)
    # The account comes from the deploying credentials (cdk CLI); synth works without one.
    env = Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=config.region)
    EnergyAuctionStack(
        app, stack_name(config.stage), stack_name=stack_name(config.stage), config=config, env=env
    )
    DeliveryPipelineStack(app, "EnergyAuction-Delivery", env=env)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build(App()).synth()
