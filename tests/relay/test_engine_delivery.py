"""relay.delivery.engine.deliver_queue: mail leaves through the next hop; every recipient's
reply is recorded; retries follow the virtual server's intervals. Next hops are loopback
sinks, DNS is the loopback DNS server, and the tests hold the clock."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from typing import Any

import pytest
from django.utils import timezone

from relay.delivery.engine import deliver_queue
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import Organization
from tests.dnsserver import DnsServer
from tests.relay.engine_world import (
    LOCAL_SENDER,
    WORKER,
    Outbound,
    deliver,
    deliver_all,
    dsns_for,
    entry_of,
    events,
    queue_of,
    recipient,
)
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


# --- delivered -------------------------------------------------------------------------


def test_it_delivers_through_the_connectors_smart_host_and_records_it(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()

    assert deliver(queue, now) == "sent"

    (received,) = mx.messages
    assert received.mail_from == LOCAL_SENDER
    assert received.rcpt_tos == ["bob@example.org"]
    assert received.content.replace(b"\r\n", b"\n") == message.raw.replace(b"\r\n", b"\n")
    assert received.helo == "mx.smtpadmin.test"  # the virtual server's FQDN
    bob = recipient(message)
    assert (bob.state, bob.status, bob.completed_at) == ("delivered", "2.0.0", now)
    assert bob.last_response.startswith("250 ")
    entry = entry_of(message, queue)
    assert (entry.state, entry.attempts, entry.lease_owner, entry.lease_until) == (
        "done",
        1,
        "",
        None,
    )
    assert entry.completed_at == now
    queue.refresh_from_db()
    assert (queue.last_attempt_at, queue.last_error) == (now, "")
    (transferred,) = events(message, TrackingEvent.Kind.TRANSFERRED)
    assert transferred.next_hop == f"[127.0.0.1]:{mx.port}"
    assert transferred.connector_name == "Partner"
    (delivered,) = events(message, TrackingEvent.Kind.DELIVERED)
    assert (delivered.recipient, delivered.next_hop) == ("bob@example.org", transferred.next_hop)
    assert delivered.response.startswith("250 ")


def test_it_finds_the_next_hop_by_mx_through_the_loopback_dns_server(
    outbound: Outbound, sink: SinkFactory, dns_server: DnsServer
) -> None:
    mx = sink()
    dns_server.add("example.org", "MX", "10 mx1.example.org")
    dns_server.host("mx1.example.org", "127.0.0.1")
    outbound.configure(remote_port=mx.port)  # the Delivery tab's outbound TCP port
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    assert queue.kind == LinkQueue.Kind.DNS

    assert deliver(queue, timezone.now()) == "sent"

    assert mx.messages[0].rcpt_tos == ["bob@example.org"]
    assert dns_server.asked("example.org", "MX") == 1
    assert events(message, "transferred")[0].next_hop == f"mx1.example.org [127.0.0.1]:{mx.port}"


def test_the_virtual_servers_external_dns_servers_are_asked_instead_of_the_default(
    outbound: Outbound, sink: SinkFactory, settings: Any
) -> None:
    mx = sink()
    with DnsServer() as own:
        own.add("example.org", "MX", "10 mx1.example.org")
        own.host("mx1.example.org", "127.0.0.1")
        settings.SMTPADMIN_DNS_SERVERS = []  # nothing else answers
        outbound.configure(remote_port=mx.port, external_dns_servers=[own.setting])
        message = outbound.send(["bob@example.org"])

        assert deliver(queue_of(message), timezone.now()) == "sent"
        assert own.asked("example.org", "MX") == 1


def test_one_connection_carries_up_to_messages_per_connection(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(messages_per_connection=2)
    messages = [outbound.send([f"user{n}@example.org"]) for n in range(5)]
    queue = queue_of(messages[0])

    assert deliver(queue, timezone.now()) == "sent"
    assert (mx.connections, len(mx.messages)) == (1, 2)
    assert [m.rcpt_tos for m in mx.messages] == [["user0@example.org"], ["user1@example.org"]]
    assert mx.verbs().count("RSET") == 1  # between the two messages

    assert deliver_all(queue, timezone.now()) == ["sent", "sent", "nothing"]
    assert (mx.connections, len(mx.messages)) == (3, 5)


def test_recipients_of_one_message_get_their_own_replies(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    replies = {"gone@example.org": "550 5.1.1 No such user", "busy@example.org": "451 4.2.1 Busy"}
    mx.rcpt = replies.get
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org", "gone@example.org", "busy@example.org"])
    queue = queue_of(message, "bob@example.org")
    now = timezone.now()

    assert deliver(queue, now) == "soft_fail"

    states = {r.address: (r.state, r.status) for r in message.recipients.all()}
    assert states == {
        "bob@example.org": ("delivered", "2.0.0"),
        "gone@example.org": ("failed", "5.1.1"),
        "busy@example.org": ("deferred", "4.2.1"),
    }
    entry = entry_of(message, queue)
    assert entry.state == "retry"
    assert entry.last_response == "451 4.2.1 Busy"
    assert mx.messages[0].rcpt_tos == ["bob@example.org"]
    kinds = sorted(e.kind for e in TrackingEvent.objects.filter(queue_id=message.queue_id))
    assert kinds.count("delivered") == kinds.count("failed") == kinds.count("deferred") == 1

    # The next attempt carries only the recipient still waiting.
    mx.rcpt = lambda address: None
    assert deliver(queue, now + timedelta(minutes=10)) == "sent"
    assert mx.messages[1].rcpt_tos == ["busy@example.org"]
    assert entry_of(message, queue).state == "done"


# --- retries ---------------------------------------------------------------------------


def test_a_4xx_reply_retries_on_the_virtual_servers_intervals(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.rcpt = lambda address: "451 4.7.1 Greylisted, try again"
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(
        retry_first_minutes=1,
        retry_second_minutes=2,
        retry_third_minutes=3,
        retry_subsequent_minutes=5,
        outbound_expiration_minutes=60 * 24,
    )
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()
    waits = []
    for _ in range(5):
        assert deliver(queue, now) == "soft_fail"
        entry = entry_of(message, queue)
        wait = entry.next_attempt_at - now
        waits.append(wait)
        # Not a second earlier.
        assert deliver(queue, now + wait - timedelta(seconds=1)) == "nothing"
        now += wait
    assert waits == [timedelta(minutes=m) for m in (1, 2, 3, 5, 5)]
    assert entry.attempts == 5
    assert recipient(message).state == "deferred"
    assert len(mx.messages) == 0
    assert len(events(message, "deferred")) == 5


def test_a_refused_connection_waits_for_the_retry_and_says_why(
    outbound: Outbound, dns_server: DnsServer
) -> None:
    from tests.relay.engine_world import dead_smart_host

    outbound.connector("Partner", [("example.org", 1)], use_dns=True)
    outbound.configure(smart_hosts="")
    dns_server.add("example.org", "MX", "10 mx1.example.org")
    dns_server.host("mx1.example.org", "127.0.0.1")
    outbound.configure(remote_port=int(dead_smart_host().rsplit(":", 1)[1]))
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()

    assert deliver(queue, now) == "soft_fail"

    entry = entry_of(message, queue)
    assert (entry.state, entry.next_attempt_at) == ("retry", now + timedelta(minutes=10))
    bob = recipient(message)
    assert bob.state == "deferred"
    assert bob.status.startswith("4.")
    queue.refresh_from_db()
    assert queue.last_error and queue.last_error == entry.last_response
    # A connector routing by DNS is not marked down for one domain's dead MX.
    assert queue.connector is not None and queue.connector.down_until is None


def test_a_dns_failure_is_temporary_and_an_unknown_domain_permanent(
    outbound: Outbound, dns_server: DnsServer
) -> None:
    dns_server.fail("slow.example", "SERVFAIL")
    first = outbound.send(["bob@slow.example"])
    second = outbound.send(["bob@nowhere.example"])
    now = timezone.now()

    assert deliver(queue_of(first), now) == "soft_fail"
    assert deliver(queue_of(second), now) == "hard_fail"

    assert (recipient(first).state, recipient(first).status) == ("deferred", "4.4.3")
    assert (recipient(second).state, recipient(second).status) == ("failed", "5.4.4")
    assert "NXDOMAIN" in recipient(second).last_response


# --- failures and DSNs -----------------------------------------------------------------


def test_a_5xx_reply_fails_the_recipient_and_sends_the_sender_a_dsn(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.reject_all("550 5.1.1 <bob@example.org>: no such user")
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()

    assert deliver(queue, now) == "hard_fail"

    bob = recipient(message)
    assert (bob.state, bob.status, bob.dsn_sent_at) == ("failed", "5.1.1", now)
    assert bob.last_response == "550 5.1.1 <bob@example.org>: no such user"
    assert entry_of(message, queue).state == "done"
    (dsn,) = dsns_for(LOCAL_SENDER)
    report = message_from_bytes(dsn.raw)
    assert report.get_content_type() == "multipart/report"
    assert "5.1.1" in dsn.raw.decode("utf-8", "replace")
    # The DSN travels like any mail: here to the sender's local mailbox queue.
    (dsn_recipient,) = dsn.recipients.select_related("entry__queue")
    assert dsn_recipient.entry is not None
    assert dsn_recipient.entry.queue.kind == LinkQueue.Kind.LOCAL


def test_a_null_mx_fails_at_once(outbound: Outbound, dns_server: DnsServer) -> None:
    dns_server.add("nomail.example", "MX", "0 .")
    message = outbound.send(["bob@nomail.example"])

    assert deliver(queue_of(message), timezone.now()) == "hard_fail"

    bob = recipient(message)
    assert (bob.state, bob.status) == ("failed", "5.1.10")
    assert len(dsns_for(LOCAL_SENDER)) == 1


def test_no_dsn_goes_back_to_the_null_sender(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    mx.reject_all()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org"], sender="")

    assert deliver(queue_of(message), timezone.now()) == "hard_fail"

    assert recipient(message).state == "failed"
    assert Message.objects.filter(system=True).exclude(pk=message.pk).count() == 0
    assert events(message, TrackingEvent.Kind.BADMAIL)


# --- outbound security -----------------------------------------------------------------


def test_required_tls_is_not_downgraded_when_the_hop_offers_none(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector(
        "Partner", [("example.org", 1)], smart_hosts=mx.smart_host, tls_mode="required"
    )
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "soft_fail"

    assert mx.messages == []
    bob = recipient(message)
    assert bob.state == "deferred"
    assert "TLS" in bob.last_response and bob.status.startswith("4.7")


def test_required_tls_delivers_when_offered_and_the_certificate_checks_out(
    outbound: Outbound, sink: SinkFactory, settings: Any
) -> None:
    mx = sink(tls=True)
    settings.SMTPADMIN_OUTBOUND_CA_FILE = mx.ca_file
    outbound.connector(
        "Partner", [("example.org", 1)], smart_hosts=mx.smart_host, tls_mode="required"
    )
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "sent"

    assert mx.messages[0].tls
    assert "STARTTLS" in mx.verbs()


def test_opportunistic_tls_uses_starttls_when_offered_and_plain_smtp_otherwise(
    outbound: Outbound, sink: SinkFactory, settings: Any
) -> None:
    secure, plain = sink(tls=True), sink()
    settings.SMTPADMIN_OUTBOUND_CA_FILE = secure.ca_file
    outbound.connector(
        "Secure", [("secure.example", 1)], smart_hosts=secure.smart_host, tls_mode="opportunistic"
    )
    outbound.connector(
        "Plain", [("plain.example", 1)], smart_hosts=plain.smart_host, tls_mode="opportunistic"
    )
    first = outbound.send(["bob@secure.example"])
    second = outbound.send(["bob@plain.example"])
    now = timezone.now()

    assert deliver(queue_of(first), now) == deliver(queue_of(second), now) == "sent"
    assert secure.messages[0].tls and not plain.messages[0].tls


def test_without_a_connector_the_virtual_servers_outbound_security_applies(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.configure(smart_hosts=mx.smart_host, outbound_tls="required")
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    assert queue.kind == LinkQueue.Kind.SMART_HOST

    assert deliver(queue, timezone.now()) == "soft_fail"
    assert "TLS" in recipient(message).last_response


def test_it_authenticates_to_the_next_hop_with_the_connectors_credentials(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink(auth=("relay", "s3cret"))
    outbound.connector(
        "Partner",
        [("example.org", 1)],
        smart_hosts=mx.smart_host,
        outbound_auth="basic",
        outbound_username="relay",
        outbound_password="s3cret",
    )
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "sent"
    assert mx.messages[0].auth_user == "relay"


def test_a_refused_authentication_retries_instead_of_bouncing_the_mail(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink(auth=("relay", "s3cret"))
    outbound.connector(
        "Partner",
        [("example.org", 1)],
        smart_hosts=mx.smart_host,
        outbound_auth="basic",
        outbound_username="relay",
        outbound_password="wrong",
    )
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "soft_fail"
    assert recipient(message).state == "deferred"
    assert mx.messages == []


def test_send_helo_instead_of_ehlo_is_honoured(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host, send_helo=True)
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "sent"
    assert mx.verbs()[0] == "HELO"


def test_the_masquerade_domain_replaces_the_senders_domain_in_mail_from(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(masquerade_domain="mail.example.net")
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "sent"
    assert mx.messages[0].mail_from == "alice@mail.example.net"


# --- what holds mail back --------------------------------------------------------------


def test_nothing_leaves_a_frozen_queue(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    LinkQueue.objects.filter(pk=queue.pk).update(frozen=True)

    assert deliver(queue, timezone.now()) == "frozen"
    assert mx.messages == []
    assert entry_of(message, queue).lease_owner == ""


def test_a_frozen_message_stays_while_the_rest_of_its_queue_goes(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    held = outbound.send(["held@example.org"])
    other = outbound.send(["bob@example.org"])
    queue = queue_of(held)
    QueueEntry.objects.filter(message=held).update(state=QueueEntry.State.FROZEN)

    assert deliver_all(queue, timezone.now()) == ["sent", "nothing"]
    assert [m.rcpt_tos for m in mx.messages] == [["bob@example.org"]]
    assert recipient(held).state == "pending"
    assert recipient(other).state == "delivered"


def test_nothing_leaves_while_outbound_mail_is_disabled(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    message = outbound.send(["bob@example.org"])
    Organization.objects.filter(pk=1).update(outbound_mail_disabled=True)

    assert deliver(queue_of(message), timezone.now()) == "disabled"
    assert mx.messages == []

    Organization.objects.filter(pk=1).update(outbound_mail_disabled=False)
    assert deliver(queue_of(message), timezone.now()) == "sent"


def test_the_outbound_connection_limit_per_domain_is_kept(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(outbound_per_domain_limit=1, messages_per_connection=1)
    first = outbound.send(["one@example.org"])
    outbound.send(["two@example.org"])
    queue = queue_of(first)
    # Another worker is sending the first message right now: one connection to the domain.
    assert QueueEntry.claim(entry_of(first, queue).pk, "worker-b/1", seconds=600)

    assert deliver(queue, timezone.now()) == "busy"
    assert mx.connections == 0

    outbound.configure(outbound_per_domain_limit=2)
    assert deliver(queue, timezone.now()) == "sent"
    assert mx.messages[0].rcpt_tos == ["two@example.org"]


def test_a_queue_that_does_not_exist_or_is_local_has_nothing_to_deliver(
    outbound: Outbound,
) -> None:
    message = outbound.send(["bob@smtpadmin.test"])
    local = queue_of(message)
    assert local.kind == LinkQueue.Kind.LOCAL

    assert deliver_queue(local.pk, WORKER) == "nothing"
    assert deliver_queue(10**9, WORKER) == "nothing"
    assert recipient(message).state == Recipient.State.PENDING
