"""The CloudWatch metrics a handler publishes (its EMF lines on stdout), and Powertools' warning
when it publishes none."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from energy_auction.observability import every_metrics

EMPTY_METRICS_WARNING = "No application metrics to publish"


@dataclass
class Published:
    metrics: dict[str, list[float]] = field(default_factory=dict)
    """Each metric's name and values, as CloudWatch reads them from the EMF lines."""
    warnings: list[str] = field(default_factory=list)
    """Powertools' "No application metrics to publish" warnings."""


@contextmanager
def published_metrics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Published]:
    """While it lasts, metrics are published (the tests otherwise disable them), and recorded."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    published = Published()
    # While they were disabled, Powertools kept every earlier test's metrics: start from none.
    for metrics in every_metrics():
        metrics.clear_metrics()
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield published
    for line in capsys.readouterr().out.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = document[metric["Name"]]
                    published.metrics[metric["Name"]] = value if isinstance(value, list) else [value]
    published.warnings = [str(w.message) for w in caught if EMPTY_METRICS_WARNING in str(w.message)]
