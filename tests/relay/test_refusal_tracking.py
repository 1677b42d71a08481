"""Refusals during the SMTP dialogue in Message Tracking: one event per session that counts its
refused recipients and senders, names the first few and the kinds of refusal, so a client
sending refused junk cannot fill the database, and an administrator still sees who was refused
what and how often."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User

from relay.models import TrackingEvent
from relay.queue.tracking import ADDRESSES_SHOWN, RefusalTally, refusal_class
from smtpadmin.models import Organization
from tests.conftest import client_for
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import World, message
from tests.servers.console_world import html_of, logged_in

Relay = Callable[..., RelayThread]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RELAY_DENIED = "550 5.7.1 Relaying denied: this server does not accept mail for elsewhere.test"


def rejected() -> list[TrackingEvent]:
    return list(TrackingEvent.objects.filter(kind="rejected").order_by("pk"))


def settled(count: int, refusals: str) -> Callable[[], list[TrackingEvent]]:
    """Waits for ``count`` rejected events, the last one mentioning ``refusals``."""

    def check() -> list[TrackingEvent]:
        events = rejected()
        return events if len(events) == count and refusals in events[-1].detail else []

    return check


# --- the summary, as plain data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (RELAY_DENIED, "550 5.7.1 relaying denied"),
        ("550 5.1.1 <x@smtpadmin.test>: no such mailbox here", "550 5.1.1 unknown mailbox"),
        ("553 5.1.3 Bad recipient address: source routes ...", "553 5.1.3 bad address"),
        (
            "550 5.7.1 Sender <a@b.test> is refused by this organization's sender filter",
            ("550 5.7.1 sender filter"),
        ),
        ("554 5.4.6 Too many hops: 16 Received headers", "554 5.4.6 looping message"),
        ("551 something new", "551"),
    ],
)
def test_a_refusal_is_classed_by_code_status_and_kind(reply: str, kind: str) -> None:
    assert refusal_class(reply) == kind


def test_the_tally_counts_every_refusal_and_names_the_first_recipients() -> None:
    tally = RefusalTally()
    assert tally.report() is None
    assert tally.add("Spam@Outside.test", "V0@Elsewhere.test", RELAY_DENIED, NOW) is True
    for n in range(1, 12):
        assert tally.add("spam@outside.test", f"v{n}@elsewhere.test", RELAY_DENIED, NOW) is False
    tally.add("spam@outside.test", "nobody@smtpadmin.test", "550 5.1.1 <n>: no such mailbox", NOW)
    tally.add("blocked@outside.test", "", "550 5.7.1 Sender <b> ... sender filter", NOW)
    report = tally.report()
    assert report is not None
    assert (report.sender, report.recipient, report.response, report.at) == (
        "spam@outside.test",
        "v0@elsewhere.test",
        RELAY_DENIED,
        NOW,
    )
    assert report.refusals == 14
    assert report.detail == (
        "Refused in this session: 13 recipients, 1 sender (12 x 550 5.7.1 relaying denied; "
        "1 x 550 5.1.1 unknown mailbox; 1 x 550 5.7.1 sender filter). Recipients: "
        "v0@elsewhere.test, v1@elsewhere.test, v2@elsewhere.test, v3@elsewhere.test, "
        "v4@elsewhere.test and 8 more."
    )


def test_the_summary_stays_small_whatever_the_client_sends() -> None:
    tally = RefusalTally()
    for n in range(10_000):
        tally.add("s@o.test", f"{'x' * 60}{n}@{'d' * 180}.test", f"5{n % 100:02d} 5.{n}.1 x", NOW)
    report = tally.report()
    assert report is not None and report.refusals == 10_000
    assert len(tally.addresses) == ADDRESSES_SHOWN
    assert len(tally.classes) <= 9  # eight classes and "other"
    assert len(report.detail) < 2500


# --- over real sockets ---------------------------------------------------------------------


def _count(event: TrackingEvent) -> int:
    found = re.match(r"Refused in this session: (\d+) recipients", event.detail)
    return int(found[1]) if found else 0


def refuse_many(port: int, refusals: int, source: str = "127.0.0.1") -> list[int]:
    """One session: MAIL, then ``refusals`` RCPTs for a domain nobody may relay to, pipelined."""
    with socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0)) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        commands = ["EHLO client.test", "MAIL FROM:<spam@outside.test>"]
        commands += [f"RCPT TO:<victim{n}@elsewhere.test>" for n in range(refusals)]
        sock.sendall(("\r\n".join(commands) + "\r\nQUIT\r\n").encode())
        codes = [int(line[:3]) for line in reader if line[3:4] != b"-"]
    return codes


def test_one_session_of_refused_recipients_writes_one_event(world: World, relay: Relay) -> None:
    relay(world.server)
    codes = refuse_many(world.port, 30)
    # Refused until the session is ended for too many errors.
    refused = codes.count(550)
    assert refused >= 20 and codes[2:] == [550] * refused + [421]
    # The relay may have read one more pipelined RCPT before the connection was gone.
    (event,) = wait_for(lambda: [e for e in rejected() if _count(e) >= refused])
    refused = _count(event)
    assert refused <= 30 and len(rejected()) == 1
    assert (event.client_address, event.sender, event.recipient) == (
        "127.0.0.1",
        "spam@outside.test",
        "victim0@elsewhere.test",
    )
    assert event.response.startswith("550 5.7.1 Relaying denied")
    assert event.detail.startswith(
        f"Refused in this session: {refused} recipients ({refused} x 550 5.7.1 relaying denied)."
    )
    assert f"victim4@elsewhere.test and {refused - 5} more" in event.detail


def test_many_sessions_write_one_event_each(world: World, relay: Relay) -> None:
    world.configure(connection_limit_per_client=0)
    worker = relay(world.server)
    refused = sum(refuse_many(world.port, 25).count(550) for _ in range(40))
    assert refused >= 40 * 20
    # Every session's event brought up to date: 40 rows for 800 and more refusals.
    wait_for(
        lambda: len(events := rejected()) == 40 and sum(map(_count, events)) >= refused,
        timeout=20,
    )
    wait_for(lambda: worker.session_count(world.vs) == 0)
    assert len(rejected()) == 40
    assert TrackingEvent.objects.count() == 40


def test_refusals_in_several_transactions_and_after_data_share_the_event(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        for round_ in range(3):
            client.mail("spam@outside.test")
            for n in range(3):
                assert client.rcpt(f"v{round_}{n}@elsewhere.test")[0] == 550
            client.rset()
        # Accepted recipients of a relay domain, then refused as a looping message at DATA.
        client.mail("loop@outside.test")
        for n in range(30):
            assert client.rcpt(f"user{n}@partner.test")[0] == 250
        looping = b"".join(b"Received: from hop%d\r\n" % n for n in range(16)) + message()
        assert client.data(looping)[0] == 554
    (event,) = wait_for(settled(1, "39 recipients"))
    assert "30 x 554 5.4.6 looping message; 9 x 550 5.7.1 relaying denied" in event.detail
    assert event.recipient == "v00@elsewhere.test"


def test_nothing_is_written_while_message_tracking_is_off(world: World, relay: Relay) -> None:
    organization = Organization.get()
    organization.message_tracking_enabled = False
    organization.save()
    relay(world.server)
    refuse_many(world.port, 5)
    with smtp(world.port) as client:  # a later session is answered: the first has ended
        assert client.noop()[0] == 250
    assert not TrackingEvent.objects.exists()


def test_the_summary_is_shown_by_the_api_and_the_tracking_center(
    world: World, relay: Relay, view_only: User
) -> None:
    relay(world.server)
    refuse_many(world.port, 7)
    wait_for(settled(1, "7 recipients"))
    answer = client_for(view_only).get("/api/v1/tracking-events/", {"sender": "spam@outside.test"})
    assert answer.status_code == 200
    (shown,) = answer.json()["results"]
    assert (shown["kind"], shown["client_address"]) == ("rejected", "127.0.0.1")
    assert shown["detail"].startswith(
        "Refused in this session: 7 recipients (7 x 550 5.7.1 relaying denied)."
    )
    html = html_of(logged_in(view_only).get("/relay/tracking/", {"sender": "spam@outside.test"}))
    table = html[html.index("Rejected during the SMTP dialogue") :]
    assert re.search(r"127\.0\.0\.1.*victim0@elsewhere\.test.*550 5\.7\.1", table, re.S)
    assert "Refused in this session: 7 recipients (7 x 550 5.7.1 relaying denied)." in table
