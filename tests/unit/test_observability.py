"""Each function's metrics are its own: a flush by one function (the local stack runs the notifier
beside the pipeline in one process) never takes another's metrics with it."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from energy_auction.handlers import fetch_results, notify, process_order
from energy_auction.observability import metrics_for


def test_one_function_flushing_leaves_the_metrics_of_another_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # flushes print nothing
    assert len({id(m) for m in (process_order.metrics, notify.metrics, fetch_results.metrics)}) == 3
    process_order.metrics.clear_metrics()
    process_order.metrics.add_metric(name="OrdersAccepted", unit=MetricUnit.Count, value=1)
    notify.metrics.add_metric(name="NotificationsDelivered", unit=MetricUnit.Count, value=1)
    notify.metrics.flush_metrics()  # the notifier's invocation ends while ProcessOrder's goes on
    assert "OrdersAccepted" in process_order.metrics.metric_set
    assert "NotificationsDelivered" not in process_order.metrics.metric_set
    assert metrics_for("process-order") is process_order.metrics
    process_order.metrics.clear_metrics()
