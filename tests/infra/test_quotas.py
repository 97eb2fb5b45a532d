"""A stage's pipeline settings fit the AWS quotas they depend on, or the stage is refused at synth
with the setting and the quota named (infra/config.py, figures from infra/capacity.py)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App
from infra.capacity import Assumptions
from infra.config import ConfigError, StageConfig

from energy_auction.settings import Settings
from tests.infra.conftest import Synthesized
from tests.infra.templates import functions

ROOMY_TABLE = {"dynamodb_write_units_per_second": 1_000_000, "dynamodb_read_units_per_second": 3_000_000}
"""A table warmed far past a new one's throughput, so that another rule is the one that binds."""


def test_the_shipped_pipeline_defaults_fit_the_default_quotas() -> None:
    config = StageConfig(stage="dev")  # refused at construction if any rule failed

    assert (
        config.pipeline_max_concurrency,
        config.pipeline_batch_concurrency,
        config.pipeline_batch_size,
    ) == (
        Settings.pipeline_max_concurrency,
        Settings.pipeline_batch_concurrency,
        Settings.pipeline_batch_size,
    )
    assert config.lambda_concurrency_quota == Assumptions.lambda_concurrency == 1_000
    used = config.pipeline_max_concurrency * config.pipeline_batch_concurrency
    assert used + config.lambda_concurrency_reserve <= config.lambda_concurrency_quota


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"pipeline_max_concurrency": 10_001, "lambda_concurrency_quota": 10**9},
            r"pipeline_max_concurrency \(10,001\) exceeds the Distributed Map's quota of 10,000",
        ),
        (
            {"pipeline_batch_concurrency": 41},
            r"pipeline_batch_concurrency \(41\) exceeds the inline Map's quota of 40",
        ),
        (
            {"pipeline_batch_size": 5_000},
            r"pipeline_batch_size \(5,000\) order keys .* 262,144-byte payload quota",
        ),
        (
            {"pipeline_max_concurrency": 80},
            r"\(80 x 10 = 800\) plus 210 kept for the API .* lambda_concurrency_quota \(1,000 concurrent",
        ),
        (
            {"pipeline_batch_size": 1_000, "pipeline_batch_concurrency": 1},
            r"pipeline_batch_size \(1,000\) orders, .* runs about 601 s: past an EXPRESS child's 300 s",
        ),
        (
            {"pipeline_max_concurrency": 76},
            r"settle about 1,647 orders/s: .* of dynamodb_write_units_per_second \(4,000\) and "
            r"dynamodb_read_units_per_second \(12,000\) combined",
        ),
        (
            {"pipeline_max_concurrency": 300, "lambda_concurrency_quota": 10_000, **ROOMY_TABLE},
            r"write about 4,550 results/s into one S3 prefix: past S3's 3,500 PUT/s quota",
        ),
        (
            {
                "pipeline_max_concurrency": 1_100,
                "pipeline_batch_size": 1,
                "pipeline_batch_concurrency": 1,
                "lambda_concurrency_quota": 10_000,
                **ROOMY_TABLE,
            },
            r"pipeline_batch_size \(1\) makes about 1,053 batch tallies/s on the run's record: "
            r"past DynamoDB's 1,000 write units/s per partition",
        ),
        (
            {"pipeline_timeout_seconds": 1_200},
            r"pipeline_max_orders \(1,000,000\) .* after up to 270 s of waiting for the market: "
            r"past pipeline_timeout_seconds \(1,200\)",
        ),
    ],
)
def test_a_stage_past_a_quota_is_refused_naming_the_setting_and_the_quota(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint) as refused:
        StageConfig(stage="alice", **values)

    assert "\n" not in str(refused.value)


def test_a_raised_lambda_quota_lets_a_larger_concurrency_through() -> None:
    larger = {
        "pipeline_max_concurrency": 80,
        "dynamodb_write_units_per_second": 8_000,
        "dynamodb_read_units_per_second": 24_000,
    }
    with pytest.raises(ConfigError, match="lambda_concurrency_quota"):
        StageConfig(stage="alice", **larger)  # type: ignore[arg-type]

    config = StageConfig(stage="alice", lambda_concurrency_quota=2_000, **larger)  # type: ignore[arg-type]

    assert config.pipeline_max_concurrency == 80
    assert config.assumptions().lambda_concurrency == 2_000


def test_a_stage_that_served_more_says_so_in_its_context() -> None:
    app = App(
        context={
            "stages": {"prod": {"dynamodb_write_units_per_second": 8_000}},
            "pipeline_max_concurrency": "76",
            "lambda_concurrency_quota": "3000",
        }
    )

    prod = StageConfig.from_context(app.node, "prod")

    assert (prod.pipeline_max_concurrency, prod.lambda_concurrency_quota) == (76, 3_000)
    assert prod.dynamodb_write_units_per_second == 8_000
    with pytest.raises(ConfigError, match="dynamodb_write_units_per_second \\(4,000\\)"):
        StageConfig.from_context(app.node, "dev")  # the same concurrency, on a new table


def test_the_model_bills_each_function_at_its_deployed_memory(dev: Synthesized) -> None:
    # The constructs and the model read one table, FUNCTION_MEMORY_MB.
    deployed = {name: function["Properties"]["MemorySize"] for name, (_, function) in functions(dev).items()}
    assumed = Assumptions()

    assert deployed["fetch_results"] == assumed.fetch_results_memory_mb
    assert deployed["process_order"] == assumed.process_order_memory_mb
    assert deployed["notify"] == assumed.notifier_memory_mb
