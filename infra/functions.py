"""The one way this app defines a Lambda function: python3.13 on arm64, the package's code plus a
dependency layer, its own role and log group, X-Ray and the Powertools settings."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import AssetHashType, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from energy_auction.deployment import SERVICE
from energy_auction.observability import NAMESPACE
from infra import LAMBDA_LOCK, SRC_DIR
from infra.bundling import dependencies_dir, lock_digest
from infra.config import StageConfig
from infra.nag import acknowledge

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
HANDLERS = ("api", "authorizer", "fetch_results", "process_order", "notify")
"""The modules under energy_auction.handlers that are deployed; each exposes ``handler``."""

CODE_EXCLUDE = ["*.egg-info", "**/__pycache__", "**/*.pyc"]


class LambdaPackage(Construct):
    """The code asset (the whole energy_auction package) and the dependency layer, shared by all."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.code = lambda_.Code.from_asset(str(SRC_DIR), exclude=CODE_EXCLUDE)
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(
                str(dependencies_dir()),
                # The folder is keyed by the lock file: hash that, not 60 MB of wheels, per synth.
                asset_hash=lock_digest(LAMBDA_LOCK),
                asset_hash_type=AssetHashType.CUSTOM,
            ),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="energy_auction's third-party dependencies (requirements/lambda.lock)",
        )


class ServiceFunction(Construct):
    """A handler of the energy_auction package as a Lambda function with least-privilege defaults.

    The role starts with nothing but writing to the function's own log group and X-Ray; the
    capability that owns the function grants the rest (``function.role``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        package: LambdaPackage,
        handler: str,
        description: str,
        environment: Mapping[str, str],
        memory_size: int = 512,
        timeout: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if handler not in HANDLERS:
            raise ValueError(f"unknown handler module {handler!r}")
        name = f"{config.resource_prefix}-{handler.replace('_', '-')}"
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{name}: least privilege for this one function",
        )
        self.log_group = config.log_group(self, "Logs", f"/aws/lambda/{name}")
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=f"energy_auction.handlers.{handler}.handler",
            code=package.code,
            layers=[package.layer],
            role=self.role,
            memory_size=memory_size,
            timeout=timeout or Duration.seconds(30),
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            environment={
                "POWERTOOLS_SERVICE_NAME": SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": config.log_level,
                **environment,
            },
        )
        self.log_group.grant_write(self.role)
        acknowledge(
            self.role,
            "IAM5",
            "X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords do not support "
            "resource-level permissions, so AWS requires Resource '*'",
            "Resource::*",
        )
        acknowledge(
            self.function,
            "L1",
            "python3.13 is the runtime the package is built, locked (requirements/lambda.lock) and tested "
            "for; moving to a newer runtime is a deliberate upgrade, not a drift",
        )
