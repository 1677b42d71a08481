"""relay.intake: accept() stores, routes and queues a message in one committed transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import AddressSpace, Connector
from relay.intake import Envelope, accept, record_rejected
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent, new_queue_id
from relay.queue import place
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer
from smtpadmin.models import Organization
from tests.threads import TestThread

pytestmark = pytest.mark.django_db

CONTENT = (
    b"From: Sender <sender@outside.test>\r\n"
    b"To: alice@smtpadmin.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <report.1@outside.test>\r\n"
    b"\r\n"
    b"Numbers attached.\r\n"
)


@dataclass
class World:
    server: Server
    vs: VirtualServer
    drop: Path


def add_mailbox(address: str) -> Mailbox:
    box = Mailbox(address=address)
    box.full_clean()
    box.save()
    return box


def make_world(tmp_path: Path) -> World:
    """One running server with one virtual server, an authoritative domain with two
    mailboxes and an internal relay domain; no connectors yet."""
    server = Server.objects.create(
        name="node1",
        fqdn="node1.smtpadmin.test",
        routing_group=RoutingGroup.first(),
        last_seen=timezone.now(),
        drop_directory=str(tmp_path / "maildrop"),
    )
    vs = VirtualServer.objects.create(
        server=server, name="Inbound", ip_address="127.0.0.1", port=2525, fqdn="mx.smtpadmin.test"
    )
    AcceptedDomain.objects.create(domain="smtpadmin.test", is_default=True)
    AcceptedDomain.objects.create(domain="partner.test", type=AcceptedDomain.Type.INTERNAL_RELAY)
    add_mailbox("alice@smtpadmin.test")
    add_mailbox("bob@smtpadmin.test")
    return World(server=server, vs=vs, drop=tmp_path / "maildrop")


def make_connector(
    name: str, spaces: list[tuple[str, int]], bridgeheads: list[VirtualServer], **fields: Any
) -> Connector:
    fields.setdefault("routing_group", RoutingGroup.first())
    connector = Connector(name=name, **fields)
    connector.full_clean()
    connector.save()
    connector.bridgeheads.set(bridgeheads)
    for pattern, cost in spaces:
        AddressSpace.objects.create(connector=connector, domain=pattern, cost=cost)
    return connector


def envelope(vs: VirtualServer, recipients: list[str], **fields: Any) -> Envelope:
    fields.setdefault("sender", "sender@outside.test")
    fields.setdefault("content", CONTENT)
    fields.setdefault("client_address", "192.0.2.10")
    fields.setdefault("client_name", "mail.outside.test")
    fields.setdefault("helo", "mail.outside.test")
    return Envelope(virtual_server_id=vs.pk, recipients=tuple(recipients), **fields)


def set_tracking(*, enabled: bool = True, subjects: bool = False) -> None:
    organization = Organization.get()
    organization.message_tracking_enabled = enabled
    organization.subject_logging_enabled = subjects
    organization.save()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def only_queue(message: Message) -> LinkQueue:
    (entry,) = message.entries.select_related("queue")
    return entry.queue


# --- the message -------------------------------------------------------------------------


def test_it_answers_with_a_short_upper_case_queue_id_of_the_stored_message(world: World) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test"]))

    assert re.fullmatch(r"[0-9A-Z]{14}", accepted.queue_id)
    assert accepted.reply == f"250 2.6.0 Ok: queued as {accepted.queue_id}"
    message = Message.objects.get(pk=accepted.message_pk)
    assert message.queue_id == accepted.queue_id


def test_queue_ids_are_unique_upper_case_and_sort_by_time() -> None:
    ids = [new_queue_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{14}", i) for i in ids)
    later = [new_queue_id(now_ms=1_800_000_000_000 + n * 1000) for n in range(50)]
    assert later == sorted(later)


def test_it_stores_the_message_with_our_received_header_first(world: World) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test"], tls=True, auth_user="relayuser"))

    message = Message.objects.get(pk=accepted.message_pk)
    first_line = message.raw.split(b"\r\n", 1)[0]
    assert first_line.startswith(
        b"Received: from mail.outside.test (mail.outside.test [192.0.2.10])"
    )
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", message.raw)
    assert (
        f"by mx.smtpadmin.test (smtpadmin) with ESMTPSA id {accepted.queue_id} "
        f"for <alice@smtpadmin.test>;".encode()
    ) in unfolded
    assert message.raw.endswith(CONTENT)
    assert message.size == len(message.raw)
    assert message.protocol == "ESMTPSA"


def test_it_names_no_recipient_in_the_received_header_of_a_message_to_several(
    world: World,
) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test", "bob@smtpadmin.test"]))

    header = Message.objects.get(pk=accepted.message_pk).raw.split(b"\r\n\r\n")[0]
    assert b"for <" not in header


def test_it_keeps_the_message_id_it_was_given(world: World) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test"]))

    message = Message.objects.get(pk=accepted.message_pk)
    assert message.message_id == "<report.1@outside.test>"
    assert message.raw.count(b"Message-ID:") == 1


def test_it_adds_a_message_id_under_the_virtual_servers_fqdn_when_there_is_none(
    world: World,
) -> None:
    content = b"Subject: no id\r\n\r\nbody\r\n"
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test"], content=content))

    message = Message.objects.get(pk=accepted.message_pk)
    assert re.fullmatch(
        rf"<\d{{14}}\.{accepted.queue_id}\.[0-9a-f]{{8}}@mx\.smtpadmin\.test>", message.message_id
    )
    assert f"Message-ID: {message.message_id}\r\n".encode() in message.raw
    assert message.raw.endswith(b"\r\n\r\nbody\r\n")


def test_it_keeps_the_envelope_client_facts_and_what_the_headers_say(world: World) -> None:
    content = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nImportance: high\r\n\r\n\xff\xfe not UTF-8\r\n"
    )
    accepted = accept(
        envelope(world.vs, ["alice@smtpadmin.test"], content=content, auth_user="relayuser")
    )

    message = Message.objects.get(pk=accepted.message_pk)
    assert message.sender == "sender@outside.test"
    assert message.virtual_server == world.vs
    assert (message.client_address, message.client_name, message.helo) == (
        "192.0.2.10",
        "mail.outside.test",
        "mail.outside.test",
    )
    assert message.auth_user == "relayuser"
    assert message.subject == "Grüße"
    assert message.priority == "high"
    assert not message.system
    assert message.raw.endswith(b"\r\n\r\n\xff\xfe not UTF-8\r\n")


def test_it_marks_a_message_from_the_null_sender_as_a_system_message(world: World) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test"], sender=""))

    message = Message.objects.get(pk=accepted.message_pk)
    assert message.system and message.null_sender


def test_it_stores_one_recipient_row_per_distinct_address(world: World) -> None:
    accepted = accept(
        envelope(world.vs, ["alice@smtpadmin.test", "bob@smtpadmin.test", "alice@smtpadmin.test"])
    )

    addresses = Recipient.objects.filter(message_id=accepted.message_pk).values_list(
        "address", flat=True
    )
    assert sorted(addresses) == ["alice@smtpadmin.test", "bob@smtpadmin.test"]


# --- routes and link queues --------------------------------------------------------------


def test_it_queues_local_recipients_on_the_local_queue_of_the_receiving_server(
    world: World,
) -> None:
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test", "bob@smtpadmin.test"]))

    (entry,) = QueueEntry.objects.filter(message_id=accepted.message_pk)
    assert accepted.local_entry_ids == (entry.pk,)
    assert entry.queue.kind == LinkQueue.Kind.LOCAL
    assert entry.queue.key == f"local:{world.server.pk}"
    assert entry.queue.server == world.server
    assert entry.state == QueueEntry.State.READY
    assert entry.next_attempt_at <= timezone.now()
    assert entry.lease_owner == "" and entry.lease_until is None
    assert sorted(entry.recipients.values_list("address", flat=True)) == [
        "alice@smtpadmin.test",
        "bob@smtpadmin.test",
    ]
    assert set(entry.recipients.values_list("state", "route")) == {("pending", "local")}


def test_it_queues_per_connector_and_destination_domain_for_a_dns_connector(
    world: World,
) -> None:
    internet = make_connector("Internet", [("*", 1)], [world.vs])

    accepted = accept(
        envelope(world.vs, ["a@one.test", "b@one.test", "c@two.test"], auth_user="relayuser")
    )

    entries = QueueEntry.objects.filter(message_id=accepted.message_pk).select_related("queue")
    by_name = {entry.queue.name: entry for entry in entries}
    assert set(by_name) == {"one.test", "two.test"}
    one = by_name["one.test"]
    assert one.queue.kind == LinkQueue.Kind.CONNECTOR
    assert one.queue.connector == internet
    assert one.queue.key == f"connector:{internet.pk}:domain:one.test"
    assert one.queue.domain == "one.test"
    assert one.recipients.count() == 2
    assert by_name["two.test"].recipients.count() == 1
    assert accepted.local_entry_ids == ()


def test_it_queues_per_connector_and_smart_hosts_for_a_smart_host_connector(
    world: World,
) -> None:
    relay = make_connector(
        "Outbound relay",
        [("*", 1)],
        [world.vs],
        use_dns=False,
        smart_hosts="[192.0.2.25]:2525;relay.example.net",
    )

    accepted = accept(envelope(world.vs, ["a@one.test", "c@two.test"]))

    message = Message.objects.get(pk=accepted.message_pk)
    queue = only_queue(message)
    assert queue.kind == LinkQueue.Kind.CONNECTOR
    assert queue.connector == relay
    assert queue.smart_hosts == "[192.0.2.25]:2525;relay.example.net"
    assert queue.key == f"connector:{relay.pk}:smart-hosts:[192.0.2.25]:2525;relay.example.net"
    assert queue.name == "Outbound relay ([192.0.2.25]:2525;relay.example.net)"


def test_it_queues_per_smart_host_when_the_virtual_server_forwards_to_one(world: World) -> None:
    world.vs.smart_hosts = "smarthost.example.net:587"
    world.vs.save()

    accepted = accept(envelope(world.vs, ["a@one.test"]))

    queue = only_queue(Message.objects.get(pk=accepted.message_pk))
    assert queue.kind == LinkQueue.Kind.SMART_HOST
    assert queue.key == "smart-hosts:smarthost.example.net:587"
    assert queue.smart_hosts == "smarthost.example.net:587"


def test_it_queues_per_destination_domain_for_dns_delivery(world: World) -> None:
    accepted = accept(envelope(world.vs, ["a@one.test", "b@ONE.test"]))

    queue = only_queue(Message.objects.get(pk=accepted.message_pk))
    assert queue.kind == LinkQueue.Kind.DNS
    assert queue.key == "dns:one.test"
    assert queue.name == queue.domain == "one.test"


def test_it_puts_a_recipient_without_route_in_the_unreachable_system_queue(
    world: World,
) -> None:
    accepted = accept(envelope(world.vs, ["someone@partner.test"]))

    message = Message.objects.get(pk=accepted.message_pk)
    queue = only_queue(message)
    assert queue.kind == LinkQueue.Kind.SYSTEM
    assert queue.name == "Final destination currently unreachable"
    (recipient,) = message.recipients.all()
    assert recipient.state == Recipient.State.PENDING
    assert "5.4.4" in recipient.last_response
    assert "5.4.4" in message.entries.get().last_response


def test_it_fails_a_recipient_whose_route_is_a_refusal_without_queueing_it(
    world: World,
) -> None:
    make_connector(
        "Restricted",
        [("*", 1)],
        [world.vs],
        restrictions_enforced=True,
        accept_by_default=True,
        sender_exceptions=["sender@outside.test"],
    )

    accepted = accept(envelope(world.vs, ["a@one.test", "alice@smtpadmin.test"]))

    message = Message.objects.get(pk=accepted.message_pk)
    failed = message.recipients.get(address="a@one.test")
    assert failed.state == Recipient.State.FAILED
    assert failed.entry is None
    assert failed.status == "5.7.1"
    assert failed.last_response.startswith("550 5.7.1")
    assert failed.completed_at is not None
    assert [e.queue.kind for e in message.entries.all()] == ["local"]
    assert TrackingEvent.objects.get(queue_id=accepted.queue_id, kind="failed").recipient == (
        "a@one.test"
    )


def test_it_reuses_the_link_queue_of_a_next_hop_for_later_messages(world: World) -> None:
    first = accept(envelope(world.vs, ["a@one.test"]))
    second = accept(envelope(world.vs, ["b@one.test"]))

    assert LinkQueue.objects.filter(key="dns:one.test").count() == 1
    queue = LinkQueue.objects.get(key="dns:one.test")
    assert set(queue.entries.values_list("message__queue_id", flat=True)) == {
        first.queue_id,
        second.queue_id,
    }


def test_it_spreads_messages_over_equal_cost_connectors(world: World) -> None:
    east = make_connector("East", [("*", 1)], [world.vs])
    west = make_connector("West", [("*", 1)], [world.vs])

    for _ in range(40):
        accept(envelope(world.vs, ["a@one.test"]))

    used = {
        connector: QueueEntry.objects.filter(queue__connector=connector).count()
        for connector in (east, west)
    }
    assert sum(used.values()) == 40
    assert min(used.values()) >= 5, used


def test_an_entry_follows_the_delivery_settings_of_the_connectors_bridgehead(
    world: World,
) -> None:
    bridgehead = VirtualServer.objects.create(
        server=world.server, name="Outbound", port=2526, outbound_expiration_minutes=60
    )
    world.vs.outbound_expiration_minutes = 600
    world.vs.local_expiration_minutes = 30
    world.vs.save()
    make_connector("Via outbound", [("*", 1)], [bridgehead])
    before = timezone.now()

    accepted = accept(envelope(world.vs, ["a@one.test", "alice@smtpadmin.test"]))

    entries = {e.queue.kind: e for e in QueueEntry.objects.filter(message_id=accepted.message_pk)}
    remote, local = entries["connector"], entries["local"]
    assert remote.virtual_server == bridgehead
    assert (
        before + timedelta(minutes=59) < remote.expires_at <= timezone.now() + timedelta(minutes=60)
    )
    assert local.virtual_server == world.vs
    assert (
        before + timedelta(minutes=29) < local.expires_at <= timezone.now() + timedelta(minutes=30)
    )
    assert local.delay_notify_at is not None and local.delay_notified_at is None


# --- tracking ----------------------------------------------------------------------------


def test_it_tracks_received_once_and_routed_per_recipient(world: World) -> None:
    accepted = accept(
        envelope(world.vs, ["alice@smtpadmin.test", "X@One.test"], auth_user="relayuser")
    )

    events = TrackingEvent.objects.filter(queue_id=accepted.queue_id)
    received = events.get(kind="received")
    assert received.message_id == "<report.1@outside.test>"
    assert received.sender == "sender@outside.test"
    assert received.virtual_server == world.vs
    assert received.virtual_server_name == "Inbound"
    assert received.server_name == "node1"
    assert received.client_address == "192.0.2.10"
    assert received.client_name == "mail.outside.test"
    assert received.auth_user == "relayuser"
    assert received.size == Message.objects.get(pk=accepted.message_pk).size
    routed = {e.recipient: e for e in events.filter(kind="routed")}
    assert set(routed) == {"alice@smtpadmin.test", "x@one.test"}
    assert routed["alice@smtpadmin.test"].queue_name == "Local delivery"
    assert routed["x@one.test"].queue_name == "one.test"
    assert "DNS MX of one.test" in routed["x@one.test"].next_hop


def test_it_tracks_the_subject_only_when_subject_logging_is_on(world: World) -> None:
    set_tracking(subjects=False)
    quiet = accept(envelope(world.vs, ["alice@smtpadmin.test"]))
    set_tracking(subjects=True)
    logged = accept(envelope(world.vs, ["alice@smtpadmin.test"]))

    received = TrackingEvent.objects.filter(kind="received")
    assert received.get(queue_id=quiet.queue_id).subject == ""
    assert received.get(queue_id=logged.queue_id).subject == "Quarterly report"


def test_it_writes_no_tracking_events_when_message_tracking_is_off(world: World) -> None:
    set_tracking(enabled=False)

    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test", "a@one.test"]))

    assert Message.objects.filter(pk=accepted.message_pk).exists()
    assert not TrackingEvent.objects.exists()


def test_it_records_a_rejection_for_message_tracking(world: World) -> None:
    record_rejected(
        virtual_server_id=world.vs.pk,
        client_address="192.0.2.66",
        sender="Spammer@Outside.test",
        recipient="victim@elsewhere.test",
        reply="550 5.7.1 Relaying denied",
        auth_user="",
    )
    record_rejected(
        virtual_server_id=world.vs.pk,
        client_address="192.0.2.66",
        sender="",
        recipient="nobody@smtpadmin.test",
        reply=(550, "5.1.1 User unknown"),
    )

    first, second = TrackingEvent.objects.filter(kind="rejected").order_by("pk")
    assert first.sender == "spammer@outside.test"
    assert first.recipient == "victim@elsewhere.test"
    assert first.response == "550 5.7.1 Relaying denied"
    assert first.client_address == "192.0.2.66"
    assert (first.server_name, first.virtual_server) == ("node1", world.vs)
    assert first.queue_id == ""
    assert second.response == "550 5.1.1 User unknown"


def test_it_records_no_rejection_when_message_tracking_is_off(world: World) -> None:
    set_tracking(enabled=False)

    record_rejected(
        virtual_server_id=world.vs.pk,
        client_address="192.0.2.66",
        sender="a@outside.test",
        recipient="victim@elsewhere.test",
        reply="550 5.7.1 Relaying denied",
    )

    assert not TrackingEvent.objects.exists()


# --- durability --------------------------------------------------------------------------


def test_it_refuses_to_run_inside_a_callers_transaction_where_its_commit_is_no_commit(
    world: World,
) -> None:
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        accept(envelope(world.vs, ["alice@smtpadmin.test"]))


@pytest.mark.django_db(transaction=True)
def test_what_it_accepted_is_visible_to_another_connection_when_it_returns(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    accepted = accept(envelope(world.vs, ["alice@smtpadmin.test", "a@one.test"]))
    seen: list[tuple[bool, int, int]] = []

    def look() -> None:
        try:
            seen.append(
                (
                    Message.objects.filter(queue_id=accepted.queue_id).exists(),
                    Recipient.objects.filter(message__queue_id=accepted.queue_id).count(),
                    QueueEntry.objects.filter(message__queue_id=accepted.queue_id).count(),
                )
            )
        finally:
            connections.close_all()

    thread = TestThread(look)
    thread.start()
    thread.finish(30)
    assert seen == [(True, 2, 2)]


def test_it_stores_nothing_when_it_fails_half_way(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the last step (tracking) fails after the message, queues, entries
    # and recipients were written in the same transaction.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(place, "event_row", broken)

    with pytest.raises(OSError, match="disk on fire"):
        accept(envelope(world.vs, ["alice@smtpadmin.test", "a@one.test"]))

    assert not Message.objects.exists()
    assert not Recipient.objects.exists()
    assert not QueueEntry.objects.exists()
    assert not LinkQueue.objects.exists()


def test_it_draws_another_queue_id_when_the_first_is_taken(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = accept(envelope(world.vs, ["alice@smtpadmin.test"])).queue_id
    draws = iter([taken, "0FRESHQUEUEID0"])
    monkeypatch.setattr(place, "new_queue_id", lambda: next(draws))

    accepted = accept(envelope(world.vs, ["bob@smtpadmin.test"]))

    assert accepted.queue_id == "0FRESHQUEUEID0"
    assert Message.objects.count() == 2
    assert b"id 0FRESHQUEUEID0" in Message.objects.get(pk=accepted.message_pk).raw


def test_it_gives_up_after_a_few_queue_id_clashes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = accept(envelope(world.vs, ["alice@smtpadmin.test"])).queue_id
    monkeypatch.setattr(place, "new_queue_id", lambda: taken)

    with pytest.raises(IntegrityError):
        accept(envelope(world.vs, ["bob@smtpadmin.test"]))
    assert Message.objects.count() == 1


# --- cost --------------------------------------------------------------------------------


def count_queries(world: World, recipients: list[str]) -> int:
    with CaptureQueriesContext(connection) as captured:
        accept(envelope(world.vs, recipients))
    return len(captured)


def test_it_needs_a_bounded_number_of_queries_however_many_recipients(world: World) -> None:
    make_connector("Partners", [("partner.test", 1)], [world.vs])
    # Warm up: the organization row and the first queues exist from here on.
    accept(envelope(world.vs, ["alice@smtpadmin.test"]))

    few = count_queries(world, ["bob@smtpadmin.test", "a@few.test"])
    # 100 recipients: local, through a connector, and 98 DNS domains (98 new link queues).
    many = count_queries(
        world,
        ["alice@smtpadmin.test", "x@partner.test"] + [f"user{n}@d{n}.test" for n in range(98)],
    )

    assert Recipient.objects.count() == 1 + 2 + 100
    assert LinkQueue.objects.count() == 1 + 1 + 1 + 98
    # Only the database's batch size adds queries (SQLite binds at most 999 parameters).
    print(f"queries: {few} for 2 recipients, {many} for 100")
    assert few <= 15
    assert many <= few + 8, (few, many)
