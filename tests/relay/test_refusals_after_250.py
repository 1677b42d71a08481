"""Mail answered 250 is never lost without a report: every recipient refused after the 250
gets a non-delivery report to its sender (RFC 3464, the DSN path a 5xx from a next hop takes),
a tracking event and a trace in the Queue Viewer. What is known during the session is refused
there instead: a sender the delivery restrictions of every matching connector refuse gets 550
5.7.1 at RCPT, with the connector's reason.

Over real sockets to the real relay; the NDRs to a local sender land in its Maildir, those that
leave go to a real SMTP sink."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email import message_from_bytes
from typing import Any

from django.utils import timezone

from connectors.models import AddressSpace, Connector
from relay.admin.search import MessageState, message_history, with_state
from relay.delivery.engine import deliver_queue
from relay.delivery.sweeper import expire_due, recover_dsns
from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from servers.models import RoutingGroup
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import PASSWORD, World, message
from tests.sinks import SinkFactory

Relay = Callable[..., RelayThread]
SENDER = "alice@smtpadmin.test"  # local: the NDR lands in her Maildir


def partner_link(world: World, smart_host: str, **fields: Any) -> Connector:
    """partner.test (an internal relay domain of the world) through a connector of this
    virtual server to ``smart_host``."""
    connector = Connector.objects.create(
        name="Partner link",
        routing_group=RoutingGroup.first(),
        use_dns=False,
        smart_hosts=smart_host,
        **fields,
    )
    connector.bridgeheads.set([world.vs])
    AddressSpace.objects.create(connector=connector, domain="partner.test")
    return connector


def refuse_sender(connector: Connector, pattern: str) -> None:
    connector.restrictions_enforced = True
    connector.accept_by_default = True
    connector.sender_exceptions = [pattern]
    connector.save()


def wait_until_enforced(listener: Any) -> None:
    """Until the listener's routing snapshot has the connector's new restrictions."""

    def enforced() -> bool:
        topology = listener.topology
        return topology is not None and topology.connectors[0].restrictions.enforced

    wait_for(enforced)


def login(client: Any) -> None:
    client.ehlo()
    client.login("relayuser", PASSWORD)


def ndr_for(world: World, address: str) -> Any:
    """The NDR in ``address``'s Maildir, parsed."""
    (report,) = world.delivered(address, timeout=15.0)
    parsed = message_from_bytes(report.as_bytes())
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    return parsed


def status_part(report: Any) -> str:
    (part,) = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    return "".join(str(block) for block in part.get_payload())


def assert_reported(failed: Recipient, event: str = TrackingEvent.Kind.FAILED) -> None:
    """The tracking events of a refusal after the 250, and its trace in the Queue Viewer: Find
    Messages shows the message failed (or completed, when others were delivered), and its
    history the failure and the NDR."""
    failed.refresh_from_db()
    assert failed.state == Recipient.State.FAILED
    assert failed.dsn_sent_at is not None
    queue_id = failed.message.queue_id
    kinds = set(
        TrackingEvent.objects.filter(queue_id=queue_id, recipient=failed.address).values_list(
            "kind", flat=True
        )
    )
    assert {event, TrackingEvent.Kind.DSN_SENT} <= kinds
    found = with_state(Message.objects.filter(queue_id=queue_id)).get()
    assert getattr(found, "state") in (MessageState.FAILED, MessageState.COMPLETED)  # noqa: B009
    history = {e.kind for e in message_history(queue_id=queue_id)}
    assert {event, TrackingEvent.Kind.DSN_SENT} <= history


# --- refused at RCPT: no NDR needed -------------------------------------------------------------


def test_a_sender_the_only_connector_refuses_is_refused_at_rcpt(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    refuse_sender(partner_link(world, sink().smart_host), "*@outside.test")
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<eve@outside.test>")[0] == 250
        code, text = client.docmd("RCPT TO:<bob@partner.test>")
        assert code == 550, text
        assert text.startswith(b"5.7.1 "), text
        assert b"'Partner link'" in text and b"*@outside.test" in text, text
        client.rset()
        # Anyone else still gets through.
        assert client.docmd("MAIL FROM:<amy@elsewhere.test>")[0] == 250
        assert client.docmd("RCPT TO:<bob@partner.test>")[0] == 250
    assert not Message.objects.exists()


# --- refused after the 250: an NDR ----------------------------------------------------------------


def restricted_after_rcpt(world: World, connector: Any, listener: Any) -> None:
    """A message from SENDER to bob@partner.test, answered 250, whose connector starts refusing
    the sender between RCPT and DATA."""
    with smtp(world.port) as client:
        login(client)
        assert client.docmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert client.docmd("RCPT TO:<bob@partner.test>")[0] == 250
        refuse_sender(connector, SENDER)
        wait_until_enforced(listener)
        assert client.docmd("DATA")[0] == 354
        client.send(message("Restricted") + b"\r\n.\r\n")
        assert client.getreply()[0] == 250


def test_a_delivery_restriction_found_after_the_250_is_reported_to_the_sender(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    """The restriction comes into force between RCPT and the end of DATA: routing refuses the
    recipient after the client was told 250, and the sender gets an NDR saying why."""
    connector = partner_link(world, sink().smart_host)
    running = relay(world.server)
    listener = running.supervisor.listeners[world.vs.pk]  # type: ignore[union-attr]
    restricted_after_rcpt(world, connector, listener)
    report = ndr_for(world, SENDER)
    status = status_part(report)
    assert "Final-Recipient: rfc822; bob@partner.test" in status
    assert "Action: failed" in status and "Status: 5.7.1" in status
    assert "Partner link" in status
    assert_reported(Recipient.objects.get(address="bob@partner.test"))


def test_a_content_restriction_is_reported_when_the_message_expires_unroutable(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    """Only the message says its size: over every connector's limit it has no route, waits in
    "Final destination currently unreachable" and its sender gets a 5.4.4 NDR."""
    partner_link(world, sink().smart_host, max_message_size_kb=1)
    relay(world.server)
    with smtp(world.port) as client:
        login(client)
        big = message("Big", body=("x" * 99 + "\r\n") * 30)
        assert client.sendmail(SENDER, ["bob@partner.test"], big) == {}
    recipient = Recipient.objects.get(address="bob@partner.test")
    assert recipient.route == "unreachable"
    # Its expiration time comes (the sweeper's clock is the real one: the NDR is due now).
    QueueEntry.objects.filter(recipients=recipient).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert expire_due(timezone.now()) == 1
    status = status_part(ndr_for(world, SENDER))
    assert "Final-Recipient: rfc822; bob@partner.test" in status
    assert "Status: 5.4.4" in status
    assert_reported(recipient, TrackingEvent.Kind.EXPIRED)


def test_a_refusal_whose_ndr_could_not_be_made_is_reported_by_the_sweeper(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    """The relay died before the NDR: the sweeper finds the refused recipient, which no queue
    entry carries, and sends the NDR."""
    connector = partner_link(world, sink().smart_host)
    running = relay(world.server)
    listener = running.supervisor.listeners[world.vs.pk]  # type: ignore[union-attr]
    listener.report_refused_soon = lambda message_pk: None  # type: ignore[method-assign]
    restricted_after_rcpt(world, connector, listener)
    recipient = Recipient.objects.get(address="bob@partner.test")
    assert recipient.entry_id is None and recipient.dsn_sent_at is None
    # The delivering worker's grace is over.
    Recipient.objects.filter(pk=recipient.pk).update(
        completed_at=timezone.now() - timedelta(minutes=5)
    )
    assert recover_dsns(timezone.now()) == 1
    assert "Status: 5.7.1" in status_part(ndr_for(world, SENDER))
    assert_reported(recipient)


def test_the_ndr_for_a_remote_sender_leaves_through_the_dsn_path(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    """A sender elsewhere gets the NDR through the queues like any other mail: here the
    partner's own connector carries it to the next hop."""
    next_hop = sink()
    connector = partner_link(world, next_hop.smart_host)
    running = relay(world.server)
    listener = running.supervisor.listeners[world.vs.pk]  # type: ignore[union-attr]
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<carol@partner.test>")[0] == 250
        assert client.docmd("RCPT TO:<alice@smtpadmin.test>")[0] == 250
        assert client.docmd("RCPT TO:<dave@partner.test>")[0] == 250
        refuse_sender(connector, "carol@partner.test")
        wait_until_enforced(listener)
        assert client.docmd("DATA")[0] == 354
        client.send(message("Half") + b"\r\n.\r\n")
        assert client.getreply()[0] == 250
    world.delivered("alice@smtpadmin.test")
    failed = Recipient.objects.get(address="dave@partner.test")
    wait_for(lambda: Recipient.objects.filter(pk=failed.pk, dsn_sent_at__isnull=False).exists())
    ndr = Message.objects.get(sender="", system=True)
    entry = QueueEntry.objects.get(message=ndr)
    deliver_queue(entry.queue_id, "test-worker")
    (sent,) = next_hop.messages
    assert sent.mail_from in ("", "<>") and sent.rcpt_tos == ["carol@partner.test"]
    assert b"Status: 5.7.1" in sent.content
    assert_reported(failed)
