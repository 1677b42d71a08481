"""The organization's default limits and the SMTP credential send limit, over real sockets to
the relay worker: each test fails when its limit is not enforced.

Which size limit applies: receiving for mail into the accepted domains, sending for mail the
organization's users send (authenticated) or that leaves the organization (relayed); the
smaller of it and the virtual server's own limit. Changes reach new sessions without a
restart."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

from django.db.models import F

from relay.models import Message
from servers.models import SmtpCredential
from smtpadmin.models import Organization
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import PASSWORD, World, message

Relay = Callable[..., RelayThread]
LARGE = message(body=("x" * 70 + "\r\n") * 30)  # about 2.2 KB


def organization(**limits: Any) -> None:
    """Change Message Delivery > Defaults like the sheet does (validated, saved)."""
    org = Organization.get()
    for name, value in limits.items():
        setattr(org, name, value)
    org.full_clean()
    org.save()


def data_reply(client: smtplib.SMTP, body: bytes) -> tuple[int, bytes]:
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(body + b"\r\n.\r\n")
    return client.getreply()


def deliver(client: smtplib.SMTP, recipient: str, body: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA in a greeted session; the reply to the end of data."""
    assert client.mail("sender@smtpadmin.test")[0] == 250
    assert client.rcpt(recipient)[0] == 250
    return data_reply(client, body)


# --- receiving size limit ---------------------------------------------------------------------


def test_the_receiving_limit_is_advertised_and_refuses_a_declared_size_at_mail(
    world: World, relay: Relay
) -> None:
    organization(receiving_size_limit_kb=1)
    world.configure(auth_basic=False)  # an anonymous client can only send into the domains
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1024"
        code, reply = client.mail("sender@outside.test", ["SIZE=5000"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        assert client.mail("sender@outside.test", ["SIZE=1000"])[0] == 250


def test_the_receiving_limit_refuses_the_message_at_the_end_of_data(
    world: World, relay: Relay
) -> None:
    organization(receiving_size_limit_kb=1)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        code, reply = deliver(client, "alice@smtpadmin.test", LARGE)
        assert (code, reply[:5]) == (552, b"5.3.4")
        assert b"1024 bytes" in reply
        # The message was read to its end: the session goes on, a small one is welcome.
        assert deliver(client, "alice@smtpadmin.test", message())[0] == 250
        # Declared: this client may only send into the domains (it may authenticate for
        # more, but not inside a transaction), so MAIL answers for the receiving limit.
        code, reply = client.mail("sender@outside.test", ["SIZE=5000"])
        assert (code, reply[:5]) == (552, b"5.3.4")
    assert Message.objects.count() == 1


# --- sending size limit -----------------------------------------------------------------------


def test_the_sending_limit_applies_to_what_an_authenticated_user_sends(
    world: World, relay: Relay
) -> None:
    organization(sending_size_limit_kb=1, receiving_size_limit_kb=None)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        code, reply = client.mail("app@smtpadmin.test", ["SIZE=5000"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        code, reply = deliver(client, "alice@smtpadmin.test", LARGE)
        assert (code, reply[:5]) == (552, b"5.3.4")
    # The same message from an anonymous client into the organization: no receiving limit.
    with smtp(world.port) as client:
        client.ehlo()
        assert deliver(client, "alice@smtpadmin.test", LARGE)[0] == 250


def test_the_sending_limit_applies_to_mail_relayed_out_of_the_organization(
    world: World, relay: Relay
) -> None:
    organization(sending_size_limit_kb=1, receiving_size_limit_kb=None)
    world.configure(relay_list=["127.0.0.0/24"])
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        code, reply = deliver(client, "friend@elsewhere.test", LARGE)
        assert (code, reply[:5]) == (552, b"5.3.4")
        # Declared: the recipient outside is refused, the one inside still taken.
        assert client.mail("app@smtpadmin.test", ["SIZE=2500"])[0] == 250
        code, reply = client.rcpt("friend@elsewhere.test")
        assert (code, reply[:5]) == (552, b"5.3.4")
        assert client.rcpt("alice@smtpadmin.test")[0] == 250
        assert data_reply(client, LARGE)[0] == 250


# --- recipients per message -------------------------------------------------------------------


def test_the_organization_limits_the_recipients_per_message(world: World, relay: Relay) -> None:
    organization(recipients_limit=2)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        assert client.rcpt("alice@smtpadmin.test")[0] == 250
        assert client.rcpt("bob@smtpadmin.test")[0] == 250
        code, reply = client.rcpt("carol@partner.test")
    assert (code, reply[:5]) == (452, b"4.5.3")


# --- no restart -------------------------------------------------------------------------------


def test_changed_organization_limits_reach_new_sessions_without_a_restart(
    world: World, relay: Relay
) -> None:
    world.configure(auth_basic=False)
    relay(world.server)

    def advertised() -> str:
        with smtp(world.port) as client:
            client.ehlo()
            return str(client.esmtp_features["size"])

    assert advertised() == str(4096 * 1024)
    organization(receiving_size_limit_kb=2, recipients_limit=1)
    wait_for(lambda: advertised() == "2048", timeout=10)
    with smtp(world.port) as client:
        client.ehlo()
        code, _ = client.mail("sender@outside.test", ["SIZE=3000"])
        assert code == 552
        client.mail("sender@outside.test")
        assert client.rcpt("alice@smtpadmin.test")[0] == 250
        assert client.rcpt("bob@smtpadmin.test")[0] == 452


# --- send limit -------------------------------------------------------------------------------


def test_the_send_limit_refuses_the_fourth_message_of_the_hour(world: World, relay: Relay) -> None:
    SmtpCredential.objects.filter(pk=world.credential.pk).update(send_limit_per_hour=3)
    relay(world.server)

    def mail_code(client: smtplib.SMTP) -> tuple[int, bytes]:
        return client.mail("app@smtpadmin.test")

    for _ in range(3):  # each in a session of its own: the count is the credential's
        with smtp(world.port) as client:
            client.ehlo()
            client.login("relayuser", PASSWORD)
            assert deliver(client, "alice@smtpadmin.test", message())[0] == 250
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        code, reply = mail_code(client)
        assert (code, reply[:5]) == (450, b"4.7.1")
        assert b"3 messages per hour" in reply
        # Anonymous mail is not the credential's.
    with smtp(world.port) as anonymous:
        anonymous.ehlo()
        assert deliver(anonymous, "alice@smtpadmin.test", message())[0] == 250

    # The hour is over: the counted messages now belong to the previous hour's bucket.
    SmtpCredential.objects.filter(pk=world.credential.pk).update(sent_hour=F("sent_hour") - 1)
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        assert deliver(client, "alice@smtpadmin.test", message())[0] == 250
    credential = SmtpCredential.objects.get(pk=world.credential.pk)
    assert credential.sent_this_hour() == 1
    assert Message.objects.count() == 5
