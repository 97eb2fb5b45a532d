"""One synth of the whole CDK app per test session, shared by the infra tests.

The app is built exactly as ``cdk synth`` builds it (cdk.json's context, cdk-nag as a validation
plugin) into a temporary cloud assembly: the dev stack, and the delivery pipeline stack with its dev
and prod stages. Building the Lambda dependency layer the first time downloads wheels from PyPI;
after that it comes from build/lambda-layer/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.pop("CDK_DEFAULT_ACCOUNT", None)  # synth must not depend on the caller's account

from aws_cdk import App, cx_api
from aws_cdk.assertions import Template
from infra.app import build, cdk_json_context


@dataclass(frozen=True)
class Synthesized:
    """A synthesized stack: its template as a dict and as a CDK assertions Template."""

    name: str
    directory: Path
    template: dict[str, Any]

    @property
    def assertions(self) -> Template:
        return Template.from_json(self.template)

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.template["Resources"].items() if r["Type"] == type_}

    def one(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.items()))


@dataclass(frozen=True)
class Assembly:
    directory: Path
    dev: Synthesized
    prod: Synthesized
    pipeline_dev: Synthesized
    delivery: Synthesized

    @property
    def templates(self) -> list[Synthesized]:
        return [self.dev, self.prod, self.pipeline_dev, self.delivery]


def _stack(assembly: cx_api.CloudAssembly, name: str) -> Synthesized:
    artifact = assembly.get_stack_by_name(name)
    return Synthesized(name, Path(assembly.directory), artifact.template)


def synthesize(outdir: Path, **context: Any) -> cx_api.CloudAssembly:
    app = App(outdir=str(outdir), context={**cdk_json_context(), **context})
    return build(app).synth()


def _assembly(outdir: Path, **context: Any) -> Assembly:
    cloud = synthesize(outdir, **context)
    dev_stage = cloud.get_nested_assembly("assembly-EnergyAuction-Delivery-Dev")
    prod_stage = cloud.get_nested_assembly("assembly-EnergyAuction-Delivery-Prod")
    return Assembly(
        directory=outdir,
        dev=_stack(cloud, "EnergyAuction-dev"),
        prod=_stack(prod_stage, "EnergyAuction-prod"),
        pipeline_dev=_stack(dev_stage, "EnergyAuction-dev"),
        delivery=_stack(cloud, "EnergyAuction-Delivery"),
    )


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    return _assembly(tmp_path_factory.mktemp("cdk.out"))


CUSTOM_CONTEXT = {
    "alert_email": "oncall@example.com",
    "connection_arn": "arn:aws:codeconnections:eu-west-1:000000000000:connection/example",
    "schedule_minutes": "15",
}


@pytest.fixture(scope="session")
def customised(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The app synthesized with CUSTOM_CONTEXT (as given with ``-c key=value``)."""
    return _assembly(tmp_path_factory.mktemp("cdk.out"), **CUSTOM_CONTEXT)


@pytest.fixture(scope="session")
def dev(assembly: Assembly) -> Synthesized:
    return assembly.dev


@pytest.fixture(scope="session")
def prod(assembly: Assembly) -> Synthesized:
    return assembly.prod


@pytest.fixture(params=["dev", "prod"])
def stage_stack(request: pytest.FixtureRequest, assembly: Assembly) -> Synthesized:
    """Each application stack: tests that hold for every stage run on both."""
    stack: Synthesized = getattr(assembly, request.param)
    return stack
