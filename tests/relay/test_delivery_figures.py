"""Delivery's figures: each attempt's recipients are counted by connector and result once the
attempt commits, the delivered ones with how long they waited, and /metrics shows them after
a real delivery to a sink (read back with Prometheus's own parser)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from smtpadmin.counters import COUNTERS
from smtpadmin.models import TotalCount
from tests.relay.engine_world import Outbound, dead_smart_host, deliver, queue_of
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    COUNTERS.flush()
    with override_settings(SMTPADMIN_METRICS_TOKEN="scrape"):
        body = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_the_counters_move_after_a_delivery_and_a_deferral(
    outbound: Outbound,
    sink: SinkFactory,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay.delivery")
    COUNTERS.flush()
    TotalCount.objects.all().delete()
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.connector("Broken", [("example.net", 1)], smart_hosts=dead_smart_host())
    delivered = outbound.send(["bob@example.org", "carol@example.org"])
    deferred = outbound.send(["dave@example.net"])

    # The test's transaction never commits: run what a commit would run.
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(queue_of(delivered, "bob@example.org"), timezone.now()) == "sent"
        deliver(queue_of(deferred), timezone.now())

    lines = [r for r in caplog.records if r.getMessage().startswith("delivery: ")]
    sent = [r for r in lines if r.queue_id == delivered.queue_id]  # type: ignore[attr-defined]
    assert len(sent) == 1 and sent[0].result == "delivered"  # type: ignore[attr-defined]
    assert sent[0].to == "bob@example.org carol@example.org"  # type: ignore[attr-defined]
    assert any(r.queue_id == deferred.queue_id and r.result == "deferred" for r in lines)  # type: ignore[attr-defined]

    found = scraped()
    partner = (("connector", "Partner"), ("result", "delivered"))
    broken = (("connector", "Broken"), ("result", "deferred"))
    assert found[("smtpadmin_deliveries_total", partner)] == 2
    assert found[("smtpadmin_deliveries_total", broken)] == 1
    assert found[("smtpadmin_delivery_seconds_count", (("connector", "Partner"),))] == 2
    assert (
        found[("smtpadmin_delivery_seconds_bucket", (("connector", "Partner"), ("le", "+Inf")))]
        == 2
    )
    assert (
        found[("smtpadmin_messages_received_total", (("virtual_server", outbound.vs.name),))] >= 2
    )
