"""Transports: the SMTP client and the Maildir each take claimed entries and return the same
result type, a verdict per recipient, and the one dequeuer drives either."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from relay.delivery.engine import deliver_claimed, renewer
from relay.delivery.transports import Reach, Sent, SmtpTransport, Transport
from relay.local import MaildirTransport, maildir_path
from relay.models import QueueEntry
from relay.queue import leases
from relay.queue.outcomes import Verdict
from relay.queue.rules import load_rules
from servers.models import Mailbox
from tests.relay.engine_world import Outbound, entry_of, queue_of
from tests.sinks import Sink, SinkFactory

pytestmark = pytest.mark.django_db

LOAD = ("message", "virtual_server__server", "queue__server", "queue__connector")


def claimed(outbound: Outbound, address: str, owner: str) -> QueueEntry:
    message = outbound.send([address])
    entry = entry_of(message, queue_of(message))
    (won,) = leases.claim([entry.pk], owner, timezone.now(), seconds=60, load=LOAD)
    return won


def transports(outbound: Outbound, mx: Sink) -> dict[str, tuple[Transport, str]]:
    """Each transport, with the address of a recipient it delivers to."""
    connector = outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    smtp_queue = queue_of(outbound.send(["carol@example.org"]))
    server = outbound.world.server
    return {
        "smtp": (
            SmtpTransport(smtp_queue, connector, outbound.vs, load_rules()),
            "bob@example.org",
        ),
        "maildir": (
            MaildirTransport(server.effective_drop_directory, server.name),
            "alice@smtpadmin.test",
        ),
    }


@pytest.mark.parametrize("kind", ["smtp", "maildir"])
def test_each_transport_returns_one_verdict_per_recipient_through_the_one_dequeuer(
    outbound: Outbound, sink: SinkFactory, kind: str
) -> None:
    transport, address = transports(outbound, sink())[kind]
    owner = leases.new_owner("worker-a/1")
    entry = claimed(outbound, address, owner)

    done = deliver_claimed(transport, entry.queue, [entry], owner, timezone.now(), seconds=60)

    assert type(done.sent) is Sent
    (judged,) = done.sent.verdicts[entry.pk]
    assert type(judged) is Verdict
    assert (judged.recipient.address, judged.outcome, judged.status) == (
        address,
        "delivered",
        "2.0.0",
    )
    assert judged.reply.startswith("250 ")
    assert (done.tally.delivered, done.tally.deferred, done.tally.failed) == (1, 0, 0)
    entry.refresh_from_db()
    assert (entry.state, entry.attempts, entry.lease_owner) == ("done", 1, "")
    assert entry.recipients.get().state == "delivered"


def test_the_transports_differ_only_in_where_the_mail_goes(
    outbound: Outbound, sink: SinkFactory
) -> None:
    both = transports(outbound, sink())
    results: dict[str, Any] = {}
    for kind, (transport, address) in both.items():
        owner = leases.new_owner("worker-a/1")
        entry = claimed(outbound, address, owner)
        results[kind] = deliver_claimed(
            transport, entry.queue, [entry], owner, timezone.now(), seconds=60
        ).sent
    assert results["smtp"].reach is Reach.REACHED
    assert results["smtp"].handoff.transferred
    assert results["maildir"].reach is Reach.NOT_TRIED
    assert results["maildir"].handoff.hop == "local delivery"
    assert not results["maildir"].handoff.transferred
    folder = maildir_path(outbound.world.drop, "alice@smtpadmin.test")
    assert len(list((folder / "new").iterdir())) == 1


@pytest.mark.parametrize("kind", ["smtp", "maildir"])
def test_a_recipient_refused_for_good_fails_the_same_way_on_either(
    outbound: Outbound, sink: SinkFactory, kind: str
) -> None:
    mx = sink()
    transport, address = transports(outbound, mx)[kind]
    mx.reject_all("550 5.1.1 No such user")  # the next hop knows no such user
    Mailbox.objects.filter(address="alice@smtpadmin.test").update(enabled=False)  # nor here
    owner = leases.new_owner("worker-a/1")
    entry = claimed(outbound, address, owner)

    done = deliver_claimed(transport, entry.queue, [entry], owner, timezone.now(), seconds=60)

    (judged,) = done.sent.verdicts[entry.pk]
    assert type(judged) is Verdict
    assert (judged.outcome, judged.status) == ("failed", "5.1.1")
    assert judged.reply.startswith("550 5.1.1 ")
    assert done.tally.failed == 1
    assert entry.recipients.get().dsn_sent_at is not None  # the sender hears of it


def test_the_dequeuers_renewal_extends_the_claim_at_most_four_times_per_lease(
    outbound: Outbound,
) -> None:
    """A transport may renew after every message: a batch of a hundred Maildir files costs a
    handful of UPDATEs, not a hundred, and the lease still never runs out under it."""
    owner = leases.new_owner("worker-a/1")
    message = outbound.send(["alice@smtpadmin.test"])
    pk = entry_of(message, queue_of(message)).pk
    leases.claim([pk], owner, timezone.now(), seconds=0.4)
    before = QueueEntry.objects.get(pk=pk).lease_until
    renew = renewer([pk], owner, seconds=0.4)

    renew()  # just claimed: nothing to do yet
    assert QueueEntry.objects.get(pk=pk).lease_until == before

    time.sleep(0.15)  # more than a quarter of the lease
    renew()
    renewed = QueueEntry.objects.get(pk=pk).lease_until
    assert renewed is not None and before is not None
    assert renewed >= before + timedelta(seconds=0.15)
