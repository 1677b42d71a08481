"""What the relay exposes on ``/metrics``: the counters its processes keep and the figures read
at scrape time (queue depth, sessions, heartbeats), every label set bounded."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from smtpadmin import counters, metrics

log = logging.getLogger("relay.delivery")

# Seconds from receipt to the next hop's acceptance (or the Maildir).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LINK_QUEUES_SHOWN = 50  # the largest queues by waiting mail; the rest are summed as "(others)"

# What the relay and the workers count (smtpadmin.counters.add / observe).
RECEIVED = "messages_received"
REFUSED = "smtp_refusals"
DELIVERIES = "deliveries"
DSNS = "dsns_sent"
LATENCY = "delivery_seconds"

metrics.counter(RECEIVED, "Messages accepted (250 at the end of DATA).", ("virtual_server",))
metrics.counter(
    REFUSED,
    "Commands refused with 5xx or 4xx, by reason class (relay, unknown recipient, ...).",
    ("virtual_server", "reason"),
)
metrics.counter(
    DELIVERIES,
    "Delivery outcomes per recipient: delivered, deferred or failed.",
    ("connector", "result"),
)
metrics.counter(DSNS, "Delivery status notifications sent.", ("kind",))
metrics.histogram(
    LATENCY, "Seconds from receipt to delivery of a recipient.", ("connector",), LATENCY_BUCKETS
)


def counted(name: str, labels: dict[str, object] | None = None, n: int = 1) -> None:
    """Count once the caller's transaction commits (at once outside one): a rolled-back
    attempt counts nothing."""
    if n > 0:
        transaction.on_commit(lambda: counters.add(name, labels, n))


# Connector names for the labels, read again once a minute (one query, not one per message).
NAMES_SECONDS = 60.0
_names: dict[int, str] = {}
_names_read = -NAMES_SECONDS


def connector_label(queue: Any) -> str:
    """The label of a link queue's mail: its connector's name; local delivery and direct
    (DNS without a connector) have one label each, so the label set stays bounded."""
    global _names, _names_read
    if queue.kind == "local":
        return "(local delivery)"
    if not queue.connector_id:
        return "(direct)"
    now = time.monotonic()
    if queue.connector_id not in _names or now - _names_read > NAMES_SECONDS:
        from connectors.models import Connector

        _names = dict(Connector.objects.values_list("pk", "name"))
        _names_read = now
    return _names.get(queue.connector_id, "(deleted connector)")


def log_attempt(
    queue: Any,
    entries: Sequence[Any],
    verdicts: Mapping[int, Sequence[Any]],
    connector: str,
    now: Any,
) -> None:
    """One log line per message and attempt (what Postfix's smtp line says): queue id,
    recipients, next hop, result, reply and delay since queued; its figures also as fields
    for LOG_FORMAT=json."""
    if not log.isEnabledFor(logging.INFO):
        return
    for entry in entries:
        judged = verdicts.get(entry.pk, ())
        if not judged:
            continue
        message = entry._state.fields_cache.get("message")  # never a query of its own
        fields = {
            "queue_id": message.queue_id if message is not None else f"#{entry.message_id}",
            "to": " ".join(v.recipient.address for v in judged),
            "queue": queue.name,
            "connector": connector,
            "result": " ".join(sorted({str(v.outcome) for v in judged})),
            "reply": " ".join(judged[0].reply.split())[:200],
            "delay_s": round((now - entry.created_at).total_seconds(), 3),
        }
        log.info(
            "delivery: %s",
            " ".join(f"{key}={value}" for key, value in fields.items()),
            extra=fields,
        )


def count_outcomes(
    queue: Any, entries: Sequence[Any], verdicts: Mapping[int, Sequence[Any]], tally: Any, now: Any
) -> None:
    """One attempt's recipients delivered, deferred and failed, and how long the delivered
    ones took since they were queued: counted once the attempt's transaction commits."""
    connector = connector_label(queue)
    log_attempt(queue, entries, verdicts, connector, now)
    waited = [
        (now - entry.created_at).total_seconds()
        for entry in entries
        for verdict in verdicts.get(entry.pk, ())
        if verdict.outcome == "delivered"
    ][: tally.delivered]

    def count() -> None:
        for result in ("delivered", "deferred", "failed"):
            counters.add(
                DELIVERIES, {"connector": connector, "result": result}, getattr(tally, result)
            )
        for seconds in waited:
            counters.observe(LATENCY, seconds, {"connector": connector}, LATENCY_BUCKETS)

    # One callback per attempt, on the delivery loop's path: nothing counted if it rolls back.
    transaction.on_commit(count)


def queue_figures() -> Iterable[Metric]:
    from relay.admin.viewer import OPEN_ENTRY_STATES
    from relay.dashboard import open_entries
    from relay.queue.models import LinkQueue, QueueEntry

    now = timezone.now()
    waiting = open_entries()
    states = GaugeMetricFamily(
        "smtpadmin_queue_entries",
        "Queue entries (a message in one link queue) waiting, by state; active = being delivered.",
        labels=["state"],
    )
    counts = dict(waiting.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    for state in OPEN_ENTRY_STATES:
        states.add_metric([state.value], counts.get(state.value, 0))
    active = waiting.filter(lease_until__gt=now).count()
    states.add_metric(["active"], active)
    yield states

    per_queue = GaugeMetricFamily(
        "smtpadmin_link_queue_entries",
        f"Entries waiting per link queue (the {LINK_QUEUES_SHOWN} largest; the rest summed).",
        labels=["queue"],
    )
    rows = list(waiting.values("queue").annotate(n=Count("pk")).order_by("-n", "queue"))
    shown = rows[:LINK_QUEUES_SHOWN]
    names = dict(
        LinkQueue.objects.filter(pk__in=[r["queue"] for r in shown]).values_list("pk", "name")
    )
    for row in shown:
        per_queue.add_metric([names.get(row["queue"], str(row["queue"]))], row["n"])
    if len(rows) > LINK_QUEUES_SHOWN:
        per_queue.add_metric(["(others)"], sum(r["n"] for r in rows[LINK_QUEUES_SHOWN:]))
    yield per_queue

    oldest = waiting.filter(state__in=QueueEntry.DUE_STATES).aggregate(at=Min("created_at"))["at"]
    age = GaugeMetricFamily(
        "smtpadmin_oldest_waiting_seconds",
        "Age of the oldest queue entry still waiting for delivery (0: none).",
    )
    age.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
    yield age


def server_figures() -> Iterable[Metric]:
    from servers.models import Server, VirtualServer

    now = timezone.now()
    sessions = GaugeMetricFamily(
        "smtpadmin_smtp_sessions",
        "Open SMTP sessions per virtual server.",
        labels=["virtual_server"],
    )
    open_sessions = VirtualServer.objects.annotate(n=Count("sessions")).values_list("name", "n")
    for name, n in sorted(open_sessions):
        sessions.add_metric([name], n)
    yield sessions
    heartbeat = GaugeMetricFamily(
        "smtpadmin_server_heartbeat_age_seconds",
        "Seconds since each server's relay last wrote its heartbeat (-1: never).",
        labels=["server"],
    )
    for name, seen in Server.objects.order_by("name").values_list("name", "last_seen"):
        heartbeat.add_metric([name], (now - seen).total_seconds() if seen else -1.0)
    yield heartbeat


metrics.gauges(queue_figures)
metrics.gauges(server_figures)
