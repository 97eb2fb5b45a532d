"""The rule a Slack incoming-webhook URL must meet, in one place: the settings check it at start
(``SLACK_WEBHOOK_URL``), the notifier on every URL it is given (a Secrets Manager value on AWS).

The URL is a secret (whoever holds it can post to the channel): no message quotes it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts a plain http:// webhook may point at (tests and the local stack); anything else needs https."""
WEBHOOK_RULE = "it must be https:// (http:// only to 127.0.0.1, localhost or ::1)"


def is_webhook_url(url: str) -> bool:
    """Whether notices may be posted to ``url``: https, or http to this machine, with a host."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a port that is not a number
    except ValueError:
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS))
