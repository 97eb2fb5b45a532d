"""Settings.from_env: defaults, parsing of every ENERGY_AUCTION_* variable, fallbacks, and refusals."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from energy_auction.settings import Backend, InvalidSettings, Settings

JWT_SECRET = "s3cr3t-value-that-must-never-be-printed-0123456789"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/never-print-me"


def test_defaults_without_any_variable() -> None:
    # When nothing is set
    settings = Settings.from_env({})

    # Then every field has its documented default
    assert settings == Settings()
    assert settings.backend is Backend.AWS
    assert settings.home == Path(".energy-auction")
    assert settings.max_orders_per_request == 100
    assert settings.max_body_bytes == 262144
    assert settings.storage_max_attempts == 5
    assert settings.storage_base_delay_seconds == 0.05
    assert settings.jwt_secret is None
    assert settings.jwt_leeway_seconds == 0
    assert settings.jwt_max_lifetime_seconds == 86400
    assert settings.secret_cache_seconds == 300
    assert settings.region is None
    assert settings.work_prefix == "work/"
    assert settings.market_ready_probability == 0.8
    assert settings.market_accept_probability == 0.7
    assert settings.market_seed is None
    assert settings.claim_lease_seconds == 900
    assert settings.pipeline_max_attempts == 10
    assert settings.pipeline_retry_seconds == 30
    assert settings.pipeline_timeout_seconds == 3600
    assert settings.pipeline_task_retry_interval_seconds == 2
    assert settings.pipeline_task_retry_max_attempts == 4
    assert settings.pipeline_task_retry_backoff_rate == 2.0
    assert settings.pipeline_max_concurrency == 40
    assert settings.pipeline_batch_size == 100
    assert settings.pipeline_batch_concurrency == 10
    assert settings.pipeline_max_orders == 1_000_000
    assert settings.slack_webhook_url is None
    assert settings.slack_webhook_secret_id is None


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "7")
    assert Settings.from_env().max_orders_per_request == 7


@pytest.mark.parametrize(
    ("variable", "raw", "name", "expected"),
    [
        ("ENERGY_AUCTION_BACKEND", "local", "backend", Backend.LOCAL),
        ("ENERGY_AUCTION_BACKEND", "aws", "backend", Backend.AWS),
        ("ENERGY_AUCTION_HOME", "/srv/auction", "home", Path("/srv/auction")),
        ("ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "25", "max_orders_per_request", 25),
        ("ENERGY_AUCTION_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
        ("ENERGY_AUCTION_STORAGE_MAX_ATTEMPTS", "3", "storage_max_attempts", 3),
        ("ENERGY_AUCTION_STORAGE_BASE_DELAY_SECONDS", "0.25", "storage_base_delay_seconds", 0.25),
        ("ENERGY_AUCTION_STORAGE_RETRY_BUDGET_SECONDS", "2.5", "storage_retry_budget_seconds", 2.5),
        ("ENERGY_AUCTION_JWT_SECRET", JWT_SECRET, "jwt_secret", JWT_SECRET),
        ("ENERGY_AUCTION_JWT_SECRET_ID", "energy-auction/dev/jwt", "jwt_secret_id", "energy-auction/dev/jwt"),
        (
            "ENERGY_AUCTION_CURSOR_SECRET_ID",
            "energy-auction/dev/cursor",
            "cursor_secret_id",
            "energy-auction/dev/cursor",
        ),
        ("ENERGY_AUCTION_CURSOR_SECRET", "k" * 40, "cursor_secret", "k" * 40),
        ("ENERGY_AUCTION_JWT_ISSUER", "issuer-1", "jwt_issuer", "issuer-1"),
        ("ENERGY_AUCTION_JWT_AUDIENCE", "traders", "jwt_audience", "traders"),
        ("ENERGY_AUCTION_JWT_LEEWAY_SECONDS", "30", "jwt_leeway_seconds", 30),
        ("ENERGY_AUCTION_JWT_MAX_LIFETIME_SECONDS", "600", "jwt_max_lifetime_seconds", 600),
        ("ENERGY_AUCTION_SECRET_CACHE_SECONDS", "0", "secret_cache_seconds", 0),
        ("ENERGY_AUCTION_ORDERS_TABLE", "orders", "orders_table", "orders"),
        ("ENERGY_AUCTION_REGION", "us-east-2", "region", "us-east-2"),
        ("ENERGY_AUCTION_RESULTS_BUCKET", "results", "results_bucket", "results"),
        ("ENERGY_AUCTION_WORK_BUCKET", "work", "work_bucket", "work"),
        ("ENERGY_AUCTION_WORK_PREFIX", "staging/", "work_prefix", "staging/"),
        ("ENERGY_AUCTION_MARKET_READY_PROBABILITY", "1", "market_ready_probability", 1.0),
        ("ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY", "0.25", "market_accept_probability", 0.25),
        ("ENERGY_AUCTION_MARKET_SEED", "42", "market_seed", 42),
        ("ENERGY_AUCTION_MARKET_SEED", "-3", "market_seed", -3),
        ("ENERGY_AUCTION_CLAIM_LEASE_SECONDS", "7200", "claim_lease_seconds", 7200),
        ("ENERGY_AUCTION_PIPELINE_MAX_ATTEMPTS", "3", "pipeline_max_attempts", 3),
        ("ENERGY_AUCTION_PIPELINE_RETRY_SECONDS", "1", "pipeline_retry_seconds", 1),
        ("ENERGY_AUCTION_PIPELINE_TIMEOUT_SECONDS", "600", "pipeline_timeout_seconds", 600),
        ("ENERGY_AUCTION_PIPELINE_BATCH_SIZE", "50", "pipeline_batch_size", 50),
        ("ENERGY_AUCTION_PIPELINE_BATCH_CONCURRENCY", "4", "pipeline_batch_concurrency", 4),
        ("ENERGY_AUCTION_PIPELINE_MAX_ORDERS", "5000", "pipeline_max_orders", 5000),
        (
            "ENERGY_AUCTION_PIPELINE_TASK_RETRY_INTERVAL_SECONDS",
            "5",
            "pipeline_task_retry_interval_seconds",
            5,
        ),
        ("ENERGY_AUCTION_PIPELINE_TASK_RETRY_MAX_ATTEMPTS", "0", "pipeline_task_retry_max_attempts", 0),
        ("ENERGY_AUCTION_PIPELINE_TASK_RETRY_BACKOFF_RATE", "1.5", "pipeline_task_retry_backoff_rate", 1.5),
        ("ENERGY_AUCTION_PIPELINE_MAX_CONCURRENCY", "40", "pipeline_max_concurrency", 40),
        ("ENERGY_AUCTION_SLACK_WEBHOOK_URL", WEBHOOK, "slack_webhook_url", WEBHOOK),
        ("ENERGY_AUCTION_SLACK_WEBHOOK_SECRET_ID", "slack/url", "slack_webhook_secret_id", "slack/url"),
        ("ENERGY_AUCTION_NOTIFICATION_TOPIC_ARN", "topic-arn", "notification_topic_arn", "topic-arn"),
        ("ENERGY_AUCTION_NOTICE_REDELIVERY_SECONDS", "0", "notice_redelivery_seconds", 0),
        ("ENERGY_AUCTION_NOTICE_DELIVERY_LEASE_SECONDS", "5", "notice_delivery_lease_seconds", 5),
    ],
)
def test_each_variable_is_parsed_into_its_field(variable: str, raw: str, name: str, expected: Any) -> None:
    # When one variable is set
    settings = Settings.from_env({variable: raw})

    # Then its field has the parsed value, of the field's type
    value = getattr(settings, name)
    assert value == expected
    assert type(value) is type(expected)
    # And every other field keeps its default
    defaults = Settings()
    others = [f.name for f in fields(Settings) if f.name != name]
    assert [getattr(settings, n) for n in others] == [getattr(defaults, n) for n in others]


def test_every_field_has_a_variable_of_its_name() -> None:
    # Guards the table above: a new field must come with a parsing case
    assert {f.name for f in fields(Settings)} == {
        "backend",
        "home",
        "max_orders_per_request",
        "max_body_bytes",
        "storage_max_attempts",
        "storage_base_delay_seconds",
        "storage_retry_budget_seconds",
        "jwt_secret",
        "jwt_secret_id",
        "cursor_secret",
        "cursor_secret_id",
        "jwt_issuer",
        "jwt_audience",
        "jwt_leeway_seconds",
        "jwt_max_lifetime_seconds",
        "secret_cache_seconds",
        "orders_table",
        "region",
        "results_bucket",
        "work_bucket",
        "work_prefix",
        "market_ready_probability",
        "market_accept_probability",
        "market_seed",
        "claim_lease_seconds",
        "pipeline_max_attempts",
        "pipeline_retry_seconds",
        "pipeline_timeout_seconds",
        "pipeline_task_retry_interval_seconds",
        "pipeline_task_retry_max_attempts",
        "pipeline_task_retry_backoff_rate",
        "pipeline_max_concurrency",
        "pipeline_batch_size",
        "pipeline_batch_concurrency",
        "pipeline_max_orders",
        "slack_webhook_url",
        "slack_webhook_secret_id",
        "notification_topic_arn",
        "notice_redelivery_seconds",
        "notice_delivery_lease_seconds",
    }


# --- Fallback variables


def test_slack_webhook_url_is_read_from_slack_webhook_url() -> None:
    assert Settings.from_env({"SLACK_WEBHOOK_URL": WEBHOOK}).slack_webhook_url == WEBHOOK


def test_the_prefixed_slack_variable_wins_over_slack_webhook_url() -> None:
    settings = Settings.from_env(
        {
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/old",
            "ENERGY_AUCTION_SLACK_WEBHOOK_URL": WEBHOOK,
        }
    )
    assert settings.slack_webhook_url == WEBHOOK


def test_an_empty_prefixed_slack_variable_falls_back_to_slack_webhook_url() -> None:
    settings = Settings.from_env({"ENERGY_AUCTION_SLACK_WEBHOOK_URL": "", "SLACK_WEBHOOK_URL": WEBHOOK})
    assert settings.slack_webhook_url == WEBHOOK


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),
        ({"AWS_REGION": "eu-central-1"}, "eu-central-1"),
        ({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"}, "eu-central-1"),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),
        (
            {"ENERGY_AUCTION_REGION": "us-west-2", "AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "x"},
            "us-west-2",
        ),
        ({}, None),
    ],
)
def test_region_falls_back_to_aws_region_then_aws_default_region(
    environ: dict[str, str], expected: str | None
) -> None:
    assert Settings.from_env(environ).region == expected


# --- Refusals


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "101"),
        ("ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "0"),
        ("ENERGY_AUCTION_MAX_BODY_BYTES", "1"),
        ("ENERGY_AUCTION_MAX_BODY_BYTES", str(10 * 1024 * 1024 + 1)),
        ("ENERGY_AUCTION_STORAGE_MAX_ATTEMPTS", "11"),
        ("ENERGY_AUCTION_STORAGE_BASE_DELAY_SECONDS", "-0.1"),
        ("ENERGY_AUCTION_JWT_LEEWAY_SECONDS", "301"),
        ("ENERGY_AUCTION_JWT_MAX_LIFETIME_SECONDS", "59"),
        ("ENERGY_AUCTION_JWT_MAX_LIFETIME_SECONDS", str(30 * 86400 + 1)),
        ("ENERGY_AUCTION_SECRET_CACHE_SECONDS", "-1"),
        ("ENERGY_AUCTION_MARKET_READY_PROBABILITY", "-0.01"),
        ("ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY", "1.5"),
        ("ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY", "inf"),
        ("ENERGY_AUCTION_CLAIM_LEASE_SECONDS", "10"),
        ("ENERGY_AUCTION_CLAIM_LEASE_SECONDS", "-5"),
        ("ENERGY_AUCTION_PIPELINE_MAX_ATTEMPTS", "0"),
        ("ENERGY_AUCTION_PIPELINE_TIMEOUT_SECONDS", "9"),
        ("ENERGY_AUCTION_NOTICE_REDELIVERY_SECONDS", "-1"),
        ("ENERGY_AUCTION_NOTICE_DELIVERY_LEASE_SECONDS", "0"),
        ("ENERGY_AUCTION_PIPELINE_TASK_RETRY_BACKOFF_RATE", "0.5"),
        ("ENERGY_AUCTION_PIPELINE_MAX_CONCURRENCY", "1001"),
    ],
)
def test_an_out_of_range_value_is_refused_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(InvalidSettings, match=variable):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize(
    "variable",
    [
        "ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY",
        "ENERGY_AUCTION_MARKET_READY_PROBABILITY",
        "ENERGY_AUCTION_STORAGE_BASE_DELAY_SECONDS",
        "ENERGY_AUCTION_PIPELINE_TASK_RETRY_BACKOFF_RATE",
    ],
)
def test_nan_is_refused_like_any_other_out_of_range_number(variable: str) -> None:
    # NaN compares false with both bounds, so "value < low or value > high" lets it through: a NaN
    # probability silently means "never", a NaN backoff rate is rendered into the state machine
    # definition, and a NaN base delay silently becomes the 1 s cap on every retry.
    with pytest.raises(InvalidSettings, match=variable):
        Settings.from_env({variable: "nan"})


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "ten"),
        ("ENERGY_AUCTION_MAX_BODY_BYTES", "1.5"),
        ("ENERGY_AUCTION_MARKET_SEED", "abc"),
        ("ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY", "70%"),
        ("ENERGY_AUCTION_BACKEND", "gcp"),
        ("ENERGY_AUCTION_BACKEND", "LOCAL"),
    ],
)
def test_an_unparsable_value_is_refused_naming_the_variable_and_value(variable: str, raw: str) -> None:
    with pytest.raises(InvalidSettings) as raised:
        Settings.from_env({variable: raw})
    message = str(raised.value)
    assert variable in message
    assert repr(raw) in message
    # And the parser's own error (which could quote more) is not chained into the traceback
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__ is True


def test_an_invalid_value_never_echoes_the_secrets_set_alongside_it() -> None:
    environ = {
        "ENERGY_AUCTION_JWT_SECRET": JWT_SECRET,
        "ENERGY_AUCTION_SLACK_WEBHOOK_URL": WEBHOOK,
        "ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST": "lots",
    }
    with pytest.raises(InvalidSettings) as raised:
        Settings.from_env(environ)
    assert JWT_SECRET not in str(raised.value)
    assert WEBHOOK not in str(raised.value)


def test_repr_never_shows_the_jwt_secret_or_the_webhook_url() -> None:
    # Given settings holding both secrets
    settings = Settings.from_env(
        {"ENERGY_AUCTION_JWT_SECRET": JWT_SECRET, "SLACK_WEBHOOK_URL": WEBHOOK, "ENERGY_AUCTION_HOME": "/h"}
    )
    assert settings.jwt_secret == JWT_SECRET
    assert settings.slack_webhook_url == WEBHOOK

    # Then neither appears in repr() or str() (what a log line or a traceback would show)
    for text in (repr(settings), str(settings)):
        assert JWT_SECRET not in text
        assert WEBHOOK not in text
        assert "never-print-me" not in text
        assert "jwt_secret=" not in text
        assert "slack_webhook_url=" not in text
    # But the rest is shown
    assert "home=" in repr(settings)
    assert "/h" in repr(settings)


# --- The Slack webhook


@pytest.mark.parametrize(
    "url",
    [
        "hooks.slack.com/services/T000/B000/never-print-me",
        "http://hooks.slack.com/services/T000/B000/never-print-me",
        "ftp://127.0.0.1/never-print-me",
        "https:///services/never-print-me",
        "https://hooks.slack.com:never-print-me/services",
        "never-print-me",
    ],
)
@pytest.mark.parametrize("variable", ["SLACK_WEBHOOK_URL", "ENERGY_AUCTION_SLACK_WEBHOOK_URL"])
def test_a_webhook_that_is_not_an_https_url_is_refused_without_showing_it(variable: str, url: str) -> None:
    # When the webhook is set to something Slack's notifier would never post to
    with pytest.raises(InvalidSettings) as refused:
        Settings.from_env({variable: url})

    # Then the service does not start, the message names the variable and the rule, and the value
    # (a secret, whatever it is) is not in it
    message = str(refused.value)
    assert message.startswith("SLACK_WEBHOOK_URL (or ENERGY_AUCTION_SLACK_WEBHOOK_URL) is refused: ")
    assert "must be https://" in message
    assert "never-print-me" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url", [WEBHOOK, "http://127.0.0.1:8123/hook", "http://localhost:9/hook", "http://[::1]:9/hook"]
)
def test_an_https_webhook_or_one_on_this_machine_is_accepted(url: str) -> None:
    assert Settings.from_env({"SLACK_WEBHOOK_URL": url}).slack_webhook_url == url


# --- The claim lease


def test_a_claim_lease_out_of_range_is_told_its_range_first() -> None:
    with pytest.raises(InvalidSettings, match=r"CLAIM_LEASE_SECONDS must be between 11 and \d+, not -5$"):
        Settings.from_env({"ENERGY_AUCTION_CLAIM_LEASE_SECONDS": "-5"})


@pytest.mark.parametrize(("lease", "timeout"), [("11", "10"), ("600", "3600"), ("900", "86400")])
def test_the_claim_lease_need_not_outlast_the_run(lease: str, timeout: str) -> None:
    # Each batch claims its own orders when it starts: a lease outlives a batch, not the whole run.
    settings = Settings.from_env(
        {"ENERGY_AUCTION_CLAIM_LEASE_SECONDS": lease, "ENERGY_AUCTION_PIPELINE_TIMEOUT_SECONDS": timeout}
    )
    assert (settings.claim_lease_seconds, settings.pipeline_timeout_seconds) == (int(lease), int(timeout))


# --- Overrides and empty values


def test_overrides_win_over_the_environment() -> None:
    environ = {
        "ENERGY_AUCTION_BACKEND": "aws",
        "ENERGY_AUCTION_MARKET_SEED": "1",
        "ENERGY_AUCTION_HOME": "/from/env",
        "ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST": "10",
    }
    settings = Settings.from_env(environ, backend=Backend.LOCAL, market_seed=99, home=Path("/override"))
    assert settings.backend is Backend.LOCAL
    assert settings.market_seed == 99
    assert settings.home == Path("/override")
    assert settings.max_orders_per_request == 10  # not overridden: from the environment


def test_overrides_are_validated_too() -> None:
    with pytest.raises(InvalidSettings, match="ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST"):
        Settings.from_env({}, max_orders_per_request=500)


@pytest.mark.parametrize(
    ("variable", "name"),
    [
        ("ENERGY_AUCTION_JWT_SECRET", "jwt_secret"),
        ("ENERGY_AUCTION_JWT_SECRET_ID", "jwt_secret_id"),
        ("ENERGY_AUCTION_JWT_ISSUER", "jwt_issuer"),
        ("ENERGY_AUCTION_JWT_AUDIENCE", "jwt_audience"),
        ("ENERGY_AUCTION_ORDERS_TABLE", "orders_table"),
        ("ENERGY_AUCTION_REGION", "region"),
        ("ENERGY_AUCTION_RESULTS_BUCKET", "results_bucket"),
        ("ENERGY_AUCTION_WORK_BUCKET", "work_bucket"),
        ("ENERGY_AUCTION_MARKET_SEED", "market_seed"),
        ("ENERGY_AUCTION_SLACK_WEBHOOK_URL", "slack_webhook_url"),
        ("ENERGY_AUCTION_SLACK_WEBHOOK_SECRET_ID", "slack_webhook_secret_id"),
    ],
)
def test_an_empty_optional_variable_means_unset(variable: str, name: str) -> None:
    assert getattr(Settings.from_env({variable: ""}), name) is None


@pytest.mark.parametrize("variable", ["ENERGY_AUCTION_JWT_SECRET", "ENERGY_AUCTION_ORDERS_TABLE"])
def test_a_blank_optional_string_means_unset(variable: str) -> None:
    assert Settings.from_env({variable: "   "}) == Settings()


@pytest.mark.parametrize(
    "variable",
    ["ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST", "ENERGY_AUCTION_BACKEND", "ENERGY_AUCTION_HOME"],
)
def test_an_empty_variable_with_a_default_keeps_the_default(variable: str) -> None:
    assert Settings.from_env({variable: ""}) == Settings()


def test_local_paths_derive_from_home() -> None:
    settings = Settings.from_env({"ENERGY_AUCTION_HOME": "/srv/auction"})
    assert settings.orders_db == Path("/srv/auction/orders.sqlite3")
    assert settings.jwt_secret_file == Path("/srv/auction/jwt-secret")
    assert settings.results_dir == Path("/srv/auction/results")
    assert settings.notifications_file == Path("/srv/auction/notifications.jsonl")
