"""Failover: a connector whose next hop cannot be reached is marked down for
a while, its waiting mail is routed again to the next-cost connector of the same address
space, and new routing decisions come back to it once it is up. Also: mail routed again when
its connector is disabled or no longer takes it, and mail in "Final destination currently
unreachable" once a route exists."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.models import Connector
from relay.delivery.engine import CONNECTOR_DOWN_FOR
from relay.models import LinkQueue, QueueEntry, TrackingEvent
from servers.models import AcceptedDomain
from tests.relay.engine_world import (
    OTHER,
    Outbound,
    dead_smart_host,
    deliver,
    dsns_for,
    entry_of,
    events,
    queue_of,
    recipient,
)
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


def test_a_connection_failure_marks_the_connector_down_and_mail_fails_over_to_the_next_cost(
    outbound: Outbound, sink: SinkFactory
) -> None:
    primary_mx, backup_mx = sink(), sink()
    primary_mx.greeting = "421 4.3.2 Not accepting mail now"
    primary = outbound.connector("Primary", [("example.org", 1)], primary_mx.smart_host)
    outbound.connector("Backup", [("example.org", 2)], backup_mx.smart_host)
    message = outbound.send(["bob@example.org"])
    first_queue = queue_of(message)
    assert first_queue.connector_id == primary.pk
    now = timezone.now()

    assert deliver(first_queue, now) == "soft_fail"

    primary.refresh_from_db()
    assert primary.down_until == now + CONNECTOR_DOWN_FOR
    assert "421" in primary.down_reason
    # The recipient moved to the backup connector's queue, due at once.
    backup_queue = queue_of(message)
    assert backup_queue.connector is not None and backup_queue.connector.name == "Backup"
    moved = entry_of(message, backup_queue)
    assert (moved.state, moved.next_attempt_at) == ("ready", now)
    assert moved.expires_at == entry_of(message, first_queue).expires_at
    assert entry_of(message, first_queue).state == "done"
    (routed,) = [e for e in events(message, TrackingEvent.Kind.ROUTED) if "again" in e.detail]
    assert "marked down" in routed.detail and routed.connector_name == "Backup"

    assert deliver(backup_queue, now) == "sent"
    assert backup_mx.messages[0].rcpt_tos == ["bob@example.org"]
    assert primary_mx.messages == []


def test_new_mail_takes_the_failover_connector_until_the_first_one_is_up_again(
    outbound: Outbound, sink: SinkFactory
) -> None:
    primary_mx, backup_mx = sink(), sink()
    primary_mx.greeting = "421 4.3.2 Not now"
    primary = outbound.connector("Primary", [("example.org", 1)], primary_mx.smart_host)
    outbound.connector("Backup", [("example.org", 2)], backup_mx.smart_host)
    first = outbound.send(["bob@example.org"])
    now = timezone.now()
    deliver(queue_of(first), now)
    moved_to = queue_of(first)

    while_down = outbound.send(["carol@example.org"])
    assert queue_of(while_down) == moved_to

    # Time passes beyond the down period (intake reads the wall clock, so the period ends).
    Connector.objects.filter(pk=primary.pk).update(down_until=timezone.now() - timedelta(seconds=1))
    primary_mx.greeting = None
    back = outbound.send(["dave@example.org"])
    assert queue_of(back).connector_id == primary.pk
    assert deliver(queue_of(back), timezone.now()) == "sent"
    assert primary_mx.messages[0].rcpt_tos == ["dave@example.org"]
    # Mail already moved stays where it went: only new routing decisions come back.
    assert queue_of(first) == moved_to
    assert queue_of(while_down) == moved_to


def test_mail_waiting_for_its_retry_fails_over_too_but_mail_in_flight_stays(
    outbound: Outbound, sink: SinkFactory
) -> None:
    backup_mx = sink()
    primary = outbound.connector("Primary", [("example.org", 1)], dead_smart_host())
    outbound.connector("Backup", [("example.org", 2)], backup_mx.smart_host)
    outbound.configure(messages_per_connection=1)
    tried = outbound.send(["one@example.org"])
    waiting = outbound.send(["two@example.org"])
    in_flight = outbound.send(["three@example.org"])
    primary_queue = queue_of(tried)
    now = timezone.now()
    # "waiting" is in retry with its next attempt in the future; "in_flight" is being sent
    # by another worker.
    QueueEntry.objects.filter(message=waiting).update(
        state="retry", next_attempt_at=now + timedelta(minutes=7)
    )
    assert QueueEntry.claim(entry_of(in_flight, primary_queue).pk, OTHER, seconds=600)

    assert deliver(primary_queue, now) == "soft_fail"

    primary.refresh_from_db()
    assert primary.down_until == now + CONNECTOR_DOWN_FOR
    assert queue_of(tried).connector is not None
    assert queue_of(tried).connector.name == "Backup"  # type: ignore[union-attr]
    assert queue_of(waiting).connector.name == "Backup"  # type: ignore[union-attr]
    assert queue_of(in_flight) == primary_queue
    assert entry_of(in_flight, primary_queue).lease_owner == OTHER


def test_with_no_other_connector_the_mail_stays_queued_on_the_down_one(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.greeting = "421 4.3.2 Not now"
    only = outbound.connector("Only", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()

    assert deliver(queue, now) == "soft_fail"

    only.refresh_from_db()
    assert only.down_until == now + CONNECTOR_DOWN_FOR
    assert queue_of(message) == queue
    entry = entry_of(message, queue)
    assert (entry.state, entry.next_attempt_at) == ("retry", now + timedelta(minutes=10))
    assert entry.lease_owner == ""

    # At its retry time it is tried again, down or not (there is nowhere else to go).
    mx.greeting = None
    assert deliver(queue, now + timedelta(minutes=5)) == "nothing"
    assert deliver(queue, now + timedelta(minutes=10)) == "sent"
    # A connection that worked: the connector is up again at once, for new mail too.
    only.refresh_from_db()
    assert (only.down_until, only.down_reason) == (None, "")


def test_mail_due_on_a_connector_marked_down_is_routed_before_it_is_sent(
    outbound: Outbound, sink: SinkFactory
) -> None:
    primary_mx, backup_mx = sink(), sink()
    primary = outbound.connector("Primary", [("example.org", 1)], primary_mx.smart_host)
    outbound.connector("Backup", [("example.org", 2)], backup_mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()
    # Another worker marked it down meanwhile (a failure on another queue of the connector).
    Connector.objects.filter(pk=primary.pk).update(
        down_until=now + timedelta(minutes=5), down_reason="connection refused"
    )

    assert deliver(queue, now) == "rerouted"

    assert primary_mx.connections == 0
    assert queue_of(message).connector.name == "Backup"  # type: ignore[union-attr]


def test_the_smart_hosts_are_tried_in_their_order(outbound: Outbound, sink: SinkFactory) -> None:
    first_mx, second_mx = sink(), sink()
    hosts = f"{dead_smart_host()};{first_mx.smart_host};{second_mx.smart_host}"
    outbound.connector("Partner", [("example.org", 1)], hosts)
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "sent"

    assert len(first_mx.messages) == 1 and second_mx.connections == 0
    assert events(message, "transferred")[0].next_hop == f"[127.0.0.1]:{first_mx.port}"


def test_a_disabled_connectors_mail_is_routed_to_the_next_connector(
    outbound: Outbound, sink: SinkFactory
) -> None:
    primary_mx, backup_mx = sink(), sink()
    primary = outbound.connector("Primary", [("example.org", 1)], primary_mx.smart_host)
    outbound.connector("Backup", [("example.org", 2)], backup_mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    Connector.objects.filter(pk=primary.pk).update(enabled=False)

    assert deliver(queue, timezone.now()) == "rerouted"
    assert deliver(queue_of(message), timezone.now()) == "sent"
    assert len(backup_mx.messages) == 1 and primary_mx.connections == 0


def test_a_message_over_the_connectors_new_size_limit_takes_another_connector(
    outbound: Outbound, sink: SinkFactory
) -> None:
    small_mx, big_mx = sink(), sink()
    small = outbound.connector("Small", [("example.org", 1)], small_mx.smart_host)
    outbound.connector("Big", [("example.org", 2)], big_mx.smart_host)
    content = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40
    message = outbound.send(["bob@example.org"], content=content)
    assert message.size > 2048
    queue = queue_of(message)
    Connector.objects.filter(pk=small.pk).update(max_message_size_kb=2)

    assert deliver(queue, timezone.now()) == "rerouted"
    assert queue_of(message).connector.name == "Big"  # type: ignore[union-attr]
    assert deliver(queue_of(message), timezone.now()) == "sent", recipient(message).last_response
    assert small_mx.connections == 0


def test_unreachable_mail_is_routed_once_a_connector_exists(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    message = outbound.send(["bob@partner.test"])  # an internal relay domain, no connector
    unreachable = queue_of(message)
    assert unreachable.kind == LinkQueue.Kind.SYSTEM
    now = timezone.now()

    assert deliver(unreachable, now) == "soft_fail"
    entry = entry_of(message, unreachable)
    assert (entry.state, entry.attempts) == ("retry", 1)
    assert entry.next_attempt_at == now + timedelta(minutes=10)

    outbound.connector("Partner", [("partner.test", 1)], mx.smart_host)
    later = now + timedelta(minutes=10)
    assert deliver(unreachable, later) == "rerouted"
    assert entry_of(message, unreachable).state == "done"
    assert deliver(queue_of(message), later) == "sent"
    assert mx.messages[0].rcpt_tos == ["bob@partner.test"]


def test_unreachable_mail_fails_with_5_4_4_when_it_expires(outbound: Outbound) -> None:
    from relay.delivery.engine import sweep

    message = outbound.send(["bob@partner.test"])
    entry = entry_of(message, queue_of(message))

    sweep(now=entry.expires_at)

    bob = recipient(message)
    assert (bob.state, bob.status) == ("failed", "5.4.4")
    (dsn,) = dsns_for("alice@smtpadmin.test")
    assert "5.4.4" in dsn.raw.decode()
    assert AcceptedDomain.objects.filter(domain="partner.test").exists()


def test_queued_mail_follows_the_connectors_edited_smart_hosts(
    outbound: Outbound, sink: SinkFactory
) -> None:
    old_mx, new_mx = sink(), sink()
    connector = outbound.connector("Partner", [("example.org", 1)], old_mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    connector.smart_hosts = new_mx.smart_host
    connector.full_clean()
    connector.save()

    assert deliver(queue, timezone.now()) == "rerouted"
    assert deliver(queue_of(message), timezone.now()) == "sent"
    assert len(new_mx.messages) == 1 and old_mx.connections == 0
