"""Unknown addresses of an authoritative domain, as the organization's "filter recipients who
are not in the directory" and the virtual server's "forward mail with unresolved recipients to
host" decide: on, 550 5.1.1 at RCPT; off, accepted and then NDR'd by local delivery, or, with
a host set, forwarded there (an address space shared with another mail system). Over real
sockets to the real relay; the forwarding host is a real SMTP sink."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes

from relay.delivery.engine import deliver_queue
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import Organization
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import PASSWORD, World, message
from tests.sinks import SinkFactory

Relay = Callable[..., RelayThread]


def directory_filter(on: bool) -> None:
    organization = Organization.get()
    organization.filter_unknown_recipients = on
    organization.save()


def test_with_the_filter_on_an_unknown_recipient_is_refused_at_rcpt(
    world: World, relay: Relay
) -> None:
    directory_filter(True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<someone@outside.test>")[0] == 250
        code, text = client.docmd("RCPT TO:<nobody@smtpadmin.test>")
        assert (code, text[:6]) == (550, b"5.1.1 "), text
        assert client.docmd("RCPT TO:<alice@smtpadmin.test>")[0] == 250
    assert not Recipient.objects.filter(address="nobody@smtpadmin.test").exists()


def test_with_the_filter_off_an_unknown_recipient_is_accepted_and_ndrd(
    world: World, relay: Relay
) -> None:
    directory_filter(False)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        assert client.docmd("MAIL FROM:<bob@smtpadmin.test>")[0] == 250
        assert client.docmd("RCPT TO:<nobody@smtpadmin.test>")[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(message("Anyone there?") + b"\r\n.\r\n")
        assert client.getreply()[0] == 250
    # The sender (a local mailbox here) gets the NDR: 5.1.1, the address does not exist.
    (report,) = world.delivered("bob@smtpadmin.test", timeout=15.0)
    parsed = message_from_bytes(report.as_bytes())
    assert parsed.get_content_type() == "multipart/report"
    text = report.as_bytes().decode("ascii", "replace")
    assert "Final-Recipient: rfc822; nobody@smtpadmin.test" in text
    assert "Status: 5.1.1" in text
    failed = Recipient.objects.get(address="nobody@smtpadmin.test")
    assert failed.state == Recipient.State.FAILED and failed.dsn_sent_at is not None
    assert TrackingEvent.objects.filter(
        recipient="nobody@smtpadmin.test", kind=TrackingEvent.Kind.DSN_SENT
    ).exists()


def test_with_a_host_for_unresolved_recipients_they_are_forwarded_there(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    other_system = sink()
    directory_filter(False)
    world.configure(unresolved_forward_host=other_system.smart_host)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        refused = client.sendmail(
            "someone@outside.test",
            ["nobody@smtpadmin.test", "alice@smtpadmin.test"],
            message("Shared address space"),
        )
        assert refused == {}
    # The known mailbox is delivered here; the unknown address waits for the other system.
    world.delivered("alice@smtpadmin.test")
    forwarded = Recipient.objects.get(address="nobody@smtpadmin.test")
    assert forwarded.route == "smart_host" and forwarded.state != Recipient.State.FAILED
    entry = QueueEntry.objects.select_related("queue").get(recipients=forwarded)
    assert entry.queue.kind == LinkQueue.Kind.SMART_HOST
    deliver_queue(entry.queue_id, "test-worker")
    (sent,) = other_system.messages
    assert sent.mail_from == "someone@outside.test"
    assert sent.rcpt_tos == ["nobody@smtpadmin.test"]
    assert b"Shared address space" in sent.content
    forwarded.refresh_from_db()
    assert forwarded.state == Recipient.State.DELIVERED
    # No NDR: nothing was lost, the other system has it.
    assert not Message.objects.filter(sender="", system=True).exists()


def test_the_host_does_not_forward_while_the_filter_refuses_unknown_recipients(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    directory_filter(True)
    world.configure(unresolved_forward_host=sink().smart_host)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<someone@outside.test>")[0] == 250
        assert client.docmd("RCPT TO:<nobody@smtpadmin.test>")[0] == 550


def test_a_host_set_later_reaches_the_running_relay(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    """No restart: the next message after the change is forwarded."""
    other_system = sink()
    directory_filter(False)
    running = relay(world.server)
    world.configure(unresolved_forward_host=other_system.smart_host)
    listener = running.supervisor.listeners[world.vs.pk]  # type: ignore[union-attr]

    def forwarding() -> bool:
        topology = listener.topology
        return topology is not None and bool(topology.unresolved_forward_host)

    wait_for(forwarding)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.sendmail("someone@outside.test", ["nobody@smtpadmin.test"], message()) == {}
    assert Recipient.objects.get(address="nobody@smtpadmin.test").route == "smart_host"
