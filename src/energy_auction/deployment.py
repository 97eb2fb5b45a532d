"""Names shared by the CDK app and the CLI for a deployed stage (no account ids or ARNs here)."""

from __future__ import annotations

SERVICE = "energy-auction"


def stack_name(stage: str) -> str:
    return f"EnergyAuction-{stage}"


def jwt_secret_name(stage: str) -> str:
    """Secrets Manager name of a stage's JWT signing secret (generated at deploy)."""
    return f"{SERVICE}/{stage}/jwt-signing-secret"


def slack_webhook_secret_name(stage: str) -> str:
    """Secrets Manager name of a stage's Slack webhook URL (created empty; the operator fills it)."""
    return f"{SERVICE}/{stage}/slack-webhook-url"


def cursor_secret_name(stage: str) -> str:
    """Secrets Manager name of a stage's listing-cursor signing key (generated at deploy; only the
    API function reads it)."""
    return f"{SERVICE}/{stage}/cursor-signing-key"
