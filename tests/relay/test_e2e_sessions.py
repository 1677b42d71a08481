"""End to end over real sockets: smtplib against the relay worker's listeners; every virtual
server setting of the issue has a test here that fails when the setting is ignored."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from relay.models import Message, TrackingEvent
from relay.smtp import loader
from servers.models import SmtpCredential
from smtpadmin.models import Organization
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import PASSWORD, World, certificate, client_tls, message

Relay = Callable[..., RelayThread]


def queue_id(reply: bytes) -> str:
    found = re.search(rb"queued as ([A-Z0-9]+)", reply)
    assert found, reply
    return found.group(1).decode()


def send(port: int, sender: str, recipients: list[str], body: bytes, **login: str) -> Any:
    with smtp(port) as client:
        client.ehlo()
        if login:
            client.login(login["user"], login["password"])
        return client.sendmail(sender, recipients, body)


def data_reply(client: smtplib.SMTP, body: bytes) -> tuple[int, bytes]:
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(body + b"\r\n.\r\n")
    return client.getreply()


# --- local delivery and intake ----------------------------------------------------------------


def test_it_delivers_mail_for_a_mailbox_into_its_maildir(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        code, reply = data_reply(client, message("Quarterly report"))
    assert code == 250
    qid = queue_id(reply)

    (delivered,) = world.delivered("alice@smtpadmin.test")
    assert delivered["Subject"] == "Quarterly report"
    received = delivered.get_all("Received")[0]
    assert "by mx.relay.test" in received and qid in received and "[127.0.0.1]" in received
    assert delivered["Message-ID"].endswith("@mx.relay.test>")
    stored = Message.objects.get(queue_id=qid)
    assert stored.sender == "sender@outside.test"
    wait_for(
        lambda: (
            {"received", "routed", "delivered"}
            <= set(TrackingEvent.objects.filter(queue_id=qid).values_list("kind", flat=True))
        )
    )


def test_it_answers_250_only_with_the_message_stored(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("bob@smtpadmin.test")
        _, reply = data_reply(client, message())
        # The client has its 250: the message is in the database at this very moment.
        assert Message.objects.filter(queue_id=queue_id(reply)).exists()


def test_it_rejects_an_unknown_local_recipient_at_rcpt(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        code, reply = client.rcpt("nobody@smtpadmin.test")
    assert code == 550 and reply.startswith(b"5.1.1")


def test_it_accepts_the_null_sender_for_a_local_mailbox(world: World, relay: Relay) -> None:
    relay(world.server)
    refused = send(world.port, "", ["alice@smtpadmin.test"], message("Bounce"))
    assert refused == {}
    assert world.delivered("alice@smtpadmin.test")[0]["Subject"] == "Bounce"


def test_it_accepts_an_internal_relay_domain_without_authentication(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    assert send(world.port, "sender@outside.test", ["anyone@partner.test"], message()) == {}


# --- relay ------------------------------------------------------------------------------------


def test_it_refuses_relay_to_an_outside_domain_without_authentication(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        code, reply = client.rcpt("victim@elsewhere.test")
    assert code == 550 and reply.startswith(b"5.7.1")
    assert not Message.objects.exists()


def test_it_relays_for_a_client_that_authenticates(world: World, relay: Relay) -> None:
    relay(world.server)
    refused = send(
        world.port,
        "relayuser@smtpadmin.test",
        ["friend@elsewhere.test"],
        message(),
        user="relayuser",
        password=PASSWORD,
    )
    assert refused == {}
    stored = Message.objects.get()
    assert stored.auth_user == "relayuser"
    assert list(stored.recipients.values_list("address", flat=True)) == ["friend@elsewhere.test"]


def test_it_refuses_relay_after_authentication_when_that_box_is_off(
    world: World, relay: Relay
) -> None:
    world.configure(relay_allow_authenticated=False)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        client.mail("relayuser@smtpadmin.test")
        code, _ = client.rcpt("friend@elsewhere.test")
    assert code == 550


def test_it_relays_for_a_client_in_the_relay_list(world: World, relay: Relay) -> None:
    world.configure(relay_list=["127.0.0.0/24"])
    relay(world.server)
    assert send(world.port, "app@smtpadmin.test", ["friend@elsewhere.test"], message()) == {}


def test_it_refuses_relay_for_a_client_excluded_in_all_except_mode(
    world: World, relay: Relay
) -> None:
    world.configure(relay_mode="all_except_listed", relay_list=["127.0.0.1"])
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("app@smtpadmin.test")
        code, _ = client.rcpt("friend@elsewhere.test")
    assert code == 550


# --- authentication and TLS ------------------------------------------------------------------


def test_it_refuses_a_wrong_password_with_535(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("relayuser", "wrong")
    assert refused.value.smtp_code == 535


def test_it_accepts_auth_login_step_by_step(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("AUTH", "LOGIN")[0] == 334
        assert client.docmd(base64.b64encode(b"relayuser").decode())[0] == 334
        code, _ = client.docmd(base64.b64encode(PASSWORD.encode()).decode())
    assert code == 235
    assert SmtpCredential.objects.get().last_used_at is not None


def test_it_does_not_offer_auth_when_basic_authentication_is_off(
    world: World, relay: Relay
) -> None:
    world.configure(auth_basic=False)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0relayuser\0x").decode())
    assert code == 502


def test_it_requires_authentication_when_anonymous_access_is_off(
    world: World, relay: Relay
) -> None:
    world.configure(auth_anonymous=False)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        code, reply = client.mail("sender@outside.test")
        assert (code, reply[:5]) == (530, b"5.7.0")
        client.login("relayuser", PASSWORD)
        assert client.mail("relayuser@smtpadmin.test")[0] == 250


def test_it_offers_starttls_with_the_certificate_and_requires_it(
    world: World, relay: Relay
) -> None:
    world.configure(certificate=certificate(), require_tls=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, reply = client.mail("sender@outside.test")
        assert (code, reply[:5]) == (530, b"5.7.0")
        client.starttls(context=client_tls())
        client.ehlo()
        assert client.mail("sender@outside.test")[0] == 250
        assert client.rcpt("alice@smtpadmin.test")[0] == 250
        code, reply = data_reply(client, message())
    assert code == 250
    assert "ESMTPS" in world.delivered("alice@smtpadmin.test")[0]["Received"]


def test_it_refuses_auth_before_starttls_when_basic_requires_tls(
    world: World, relay: Relay
) -> None:
    world.configure(certificate=certificate(), auth_basic_requires_tls=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0relayuser\0x").decode())
        assert code == 538
        client.starttls(context=client_tls())
        client.ehlo()
        assert client.has_extn("auth")
        client.login("relayuser", PASSWORD)


# --- limits ----------------------------------------------------------------------------------


def test_it_advertises_and_enforces_the_declared_message_size(world: World, relay: Relay) -> None:
    world.configure(message_size_limit_kb=1)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1024"
        code, reply = client.mail("sender@outside.test", ["SIZE=5000"])
    assert (code, reply[:5]) == (552, b"5.3.4")


def test_it_enforces_the_actual_message_size_at_the_end_of_data(world: World, relay: Relay) -> None:
    world.configure(message_size_limit_kb=1)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        code, reply = data_reply(client, message(body=("x" * 70 + "\r\n") * 30))
        assert (code, reply[:5]) == (552, b"5.3.4")
        # The session goes on: a small message is still welcome.
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        assert data_reply(client, message())[0] == 250
    assert Message.objects.count() == 1


def test_it_enforces_the_session_size(world: World, relay: Relay) -> None:
    world.configure(message_size_limit_kb=1, session_size_limit_kb=2)
    relay(world.server)
    body = message(body=("y" * 60 + "\r\n") * 12)  # about 850 bytes
    codes = []
    with smtp(world.port) as client:
        client.ehlo()
        for _ in range(3):
            client.mail("sender@outside.test")
            client.rcpt("alice@smtpadmin.test")
            code, reply = data_reply(client, body)
            codes.append((code, reply[:5]))
    assert codes[:2] == [(250, b"2.6.0")] * 2
    assert codes[2] == (552, b"5.3.4")


def test_it_limits_the_recipients_per_message(world: World, relay: Relay) -> None:
    world.configure(recipients_per_message=2)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        assert client.rcpt("alice@smtpadmin.test")[0] == 250
        assert client.rcpt("bob@smtpadmin.test")[0] == 250
        code, reply = client.rcpt("carol@partner.test")
    assert (code, reply[:5]) == (452, b"4.5.3")


def test_it_limits_the_messages_per_connection(world: World, relay: Relay) -> None:
    world.configure(messages_per_connection=2)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        for _ in range(2):
            client.sendmail("sender@outside.test", ["alice@smtpadmin.test"], message())
        code, reply = client.mail("sender@outside.test")
    assert (code, reply[:5]) == (421, b"4.7.0")


def test_it_refuses_lines_longer_than_1000_octets(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        code, reply = data_reply(client, message(body="z" * 1200 + "\r\n"))
    assert (code, reply[:5]) == (500, b"5.5.2")
    assert not Message.objects.exists()


def test_it_refuses_a_message_over_the_hop_count(world: World, relay: Relay) -> None:
    world.configure(max_hop_count=3)
    relay(world.server)
    hops = b"".join(b"Received: from hop%d.test by hop.test; today\r\n" % n for n in range(4))
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        code, reply = data_reply(client, hops + message())
        assert (code, reply[:5]) == (554, b"5.4.6")
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        assert data_reply(client, hops[:-1].rsplit(b"\r\n", 1)[0] + b"\r\n" + message())[0] == 250


def test_it_closes_an_idle_connection_after_the_time_out(
    world: World, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The console allows whole minutes; the rule is the same with half a second.
    original = loader.listener_config
    monkeypatch.setattr(
        loader, "listener_config", lambda vs: replace(original(vs), connection_timeout=0.5)
    )
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        time.sleep(1.5)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.mail("sender@outside.test")


# --- SMTP smuggling ------------------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<admin@smtpadmin.test>\r\nRCPT TO:<bob@smtpadmin.test>\r\nDATA\r\nSmuggled\r\n"
)


@pytest.mark.parametrize(
    "trick",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\nbare LF line\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.CR", "CR.CRLF", "bare-LF-lines"],
)
def test_it_refuses_bare_line_endings_in_data(world: World, relay: Relay, trick: bytes) -> None:
    relay(world.server)
    with socket.create_connection(("127.0.0.1", world.port), timeout=5) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        for command in (
            b"EHLO client.test",
            b"MAIL FROM:<a@outside.test>",
            b"RCPT TO:<alice@smtpadmin.test>",
            b"DATA",
        ):
            raw.sendall(command + b"\r\n")
            line = reader.readline()
            while line[3:4] == b"-":
                line = reader.readline()
        assert line.startswith(b"354")
        raw.sendall(b"Subject: one\r\n\r\nfirst" + trick + SMUGGLED + b"\r\n.\r\n")
        answer = reader.readline()
        rest = reader.read()  # the relay closes the connection
    assert answer.startswith(b"554 5.5.2"), answer
    assert b"250" not in rest
    time.sleep(0.3)
    assert not Message.objects.exists()


def test_it_refuses_a_bare_carriage_return_inside_a_line(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("alice@smtpadmin.test")
        code, reply = data_reply(client, b"Subject: x\r\n\r\nfoo\rbar")
    assert (code, reply[:5]) == (554, b"5.5.2")


# --- connection control and filters -----------------------------------------------------------


def test_it_refuses_clients_outside_the_connection_list(world: World, relay: Relay) -> None:
    world.configure(connection_mode="only_listed", connection_list=["10.0.0.0/8"])
    relay(world.server)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtp(world.port)
    assert refused.value.smtp_code == 554


def test_it_lets_in_clients_of_the_connection_list(world: World, relay: Relay) -> None:
    world.configure(connection_mode="only_listed", connection_list=["127.0.0.0/8"])
    relay(world.server)
    with smtp(world.port) as client:
        assert client.noop()[0] == 250


def test_it_refuses_clients_excluded_in_all_except_mode(world: World, relay: Relay) -> None:
    world.configure(connection_mode="all_except_listed", connection_list=["127.0.0.1"])
    relay(world.server)
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(world.port)


def test_it_answers_421_when_the_connection_limit_is_reached(world: World, relay: Relay) -> None:
    world.configure(connection_limit=1)
    worker = relay(world.server)
    with smtp(world.port) as first:
        first.ehlo()
        wait_for(lambda: worker.session_count(world.vs) == 1)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtp(world.port)
        assert refused.value.smtp_code == 421
        assert first.noop()[0] == 250
    # The slot is free again once the first client leaves.
    wait_for(lambda: worker.session_count(world.vs) == 0)
    with smtp(world.port) as again:
        assert again.noop()[0] == 250


def test_it_applies_the_global_deny_list_only_with_the_connection_filter(
    world: World, relay: Relay
) -> None:
    organization = Organization.get()
    organization.global_deny_list = ["127.0.0.0/8"]
    organization.save()
    relay(world.server)
    with smtp(world.port) as client:
        assert client.noop()[0] == 250
    world.configure(apply_connection_filter=True)
    wait_for(lambda: _refused(world.port))


def _refused(port: int) -> bool:
    try:
        with smtp(port):
            return False
    except smtplib.SMTPConnectError:
        return True


def test_it_applies_the_sender_filter_when_the_box_is_on(world: World, relay: Relay) -> None:
    organization = Organization.get()
    organization.blocked_senders = ["*@spam.test"]
    organization.save()
    world.configure(apply_sender_filter=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        code, _ = client.mail("king@spam.test")
        assert code == 550
        assert client.mail("friend@outside.test")[0] == 250


def test_it_ignores_the_sender_filter_when_the_box_is_off(world: World, relay: Relay) -> None:
    organization = Organization.get()
    organization.blocked_senders = ["*@spam.test"]
    organization.save()
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.mail("king@spam.test")[0] == 250


def test_it_applies_the_recipient_filter_when_the_box_is_on(world: World, relay: Relay) -> None:
    organization = Organization.get()
    organization.blocked_recipients = ["bob@smtpadmin.test"]
    organization.save()
    world.configure(apply_recipient_filter=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("friend@outside.test")
        assert client.rcpt("bob@smtpadmin.test")[0] == 550
        assert client.rcpt("alice@smtpadmin.test")[0] == 250


# --- reverse DNS (answered by the loopback DNS server) -----------------------------------------


def test_it_stamps_the_confirmed_reverse_dns_name_into_received(
    world: World, relay: Relay, dns_server: Any
) -> None:
    dns_server.host("laptop.clients.test", "127.0.0.1")
    world.configure(reverse_dns_lookup=True)
    relay(world.server)
    send(world.port, "sender@outside.test", ["alice@smtpadmin.test"], message())
    received = world.delivered("alice@smtpadmin.test")[0]["Received"]
    assert "laptop.clients.test [127.0.0.1]" in received


def test_it_leaves_the_name_out_without_the_reverse_dns_option(
    world: World, relay: Relay, dns_server: Any
) -> None:
    dns_server.host("laptop.clients.test", "127.0.0.1")
    relay(world.server)
    send(world.port, "sender@outside.test", ["alice@smtpadmin.test"], message())
    assert "laptop.clients.test" not in world.delivered("alice@smtpadmin.test")[0]["Received"]
    assert not dns_server.queries


def test_it_controls_connections_by_reverse_dns_domain(
    world: World, relay: Relay, dns_server: Any
) -> None:
    world.configure(connection_mode="only_listed", connection_list=["clients.test"])
    relay(world.server)
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(world.port)  # no PTR record yet: unknown name, not in the list
    dns_server.host("laptop.clients.test", "127.0.0.1")
    with smtp(world.port) as client:
        assert client.noop()[0] == 250


def test_a_reverse_name_that_does_not_resolve_back_is_not_trusted_for_relay(
    world: World, relay: Relay, dns_server: Any
) -> None:
    dns_server.ptr("127.0.0.1", "mail.trusted.test")
    dns_server.add("mail.trusted.test", "A", "192.0.2.10")  # forged PTR: forward says otherwise
    world.configure(relay_list=["trusted.test"])
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("app@smtpadmin.test")
        assert client.rcpt("friend@elsewhere.test")[0] == 550
    dns_server.set("mail.trusted.test", "A", "127.0.0.1")
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("app@smtpadmin.test")
        assert client.rcpt("friend@elsewhere.test")[0] == 250


# --- addresses, protocol log, tracking of refusals, a loop that never blocks -----------------


def test_it_listens_on_ipv6(world: World, relay: Relay) -> None:
    world.configure(ip_address="::1")
    relay(world.server)
    with smtp(world.port, host="::1") as client:
        client.ehlo()
        assert client.sendmail("a@outside.test", ["alice@smtpadmin.test"], message()) == {}
    assert "[IPv6:::1]" in world.delivered("alice@smtpadmin.test")[0]["Received"]


def test_all_unassigned_listens_on_every_address(world: World, relay: Relay) -> None:
    world.configure(ip_address=None)
    relay(world.server)
    for host in ("127.0.0.1", "::1"):
        with smtp(world.port, host=host) as client:
            assert client.noop()[0] == 250


def test_it_writes_the_w3c_protocol_log_when_logging_is_on(
    world: World, relay: Relay, settings: Any, tmp_path: Any
) -> None:
    settings.VAR_DIR = tmp_path / "var"
    world.configure(logging_enabled=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        client.sendmail("relayuser@smtpadmin.test", ["alice@smtpadmin.test"], message())
    logs = list((tmp_path / "var" / "logs" / f"SMTPSVC{world.vs.pk}").glob("ex*.log"))
    assert len(logs) == 1
    wait_for(lambda: "QUIT" in logs[0].read_text())
    text = logs[0].read_text()
    assert "#Fields: date time c-ip cs-username" in text
    assert re.search(r"127\.0\.0\.1 relayuser .* MAIL .*250", text)
    assert PASSWORD not in text
    assert base64.b64encode(f"\0relayuser\0{PASSWORD}".encode()).decode() not in text


def test_it_writes_no_protocol_log_when_logging_is_off(
    world: World, relay: Relay, settings: Any, tmp_path: Any
) -> None:
    settings.VAR_DIR = tmp_path / "var"
    relay(world.server)
    send(world.port, "a@outside.test", ["alice@smtpadmin.test"], message())
    assert not (tmp_path / "var" / "logs").exists()


def test_refused_recipients_are_tracked(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("sender@outside.test")
        client.rcpt("victim@elsewhere.test")
    event = wait_for(lambda: TrackingEvent.objects.filter(kind="rejected").first())
    assert event is not None
    assert (event.sender, event.recipient) == ("sender@outside.test", "victim@elsewhere.test")
    assert "5.7.1" in event.response


def test_a_slow_failed_login_does_not_hold_up_other_sessions(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as slow, smtp(world.port) as other:
        slow.ehlo()
        other.ehlo()
        for _ in range(2):  # the second failure waits two seconds before its answer
            slow.putcmd("AUTH", "PLAIN " + base64.b64encode(b"\0relayuser\0wrong").decode())
            if _ == 0:
                assert slow.getreply()[0] == 535
        started = time.monotonic()
        assert other.noop()[0] == 250
        assert time.monotonic() - started < 0.5
        assert slow.getreply()[0] == 535


def test_it_ends_a_session_of_junk_commands(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        codes = [client.noop()[0] for _ in range(100)]
        assert set(codes) == {250}
        code, reply = client.noop()
    assert (code, reply[:5]) == (421, b"4.7.0")


def test_it_ends_a_session_that_keeps_guessing_recipients(world: World, relay: Relay) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("harvester@outside.test")
        codes = [client.rcpt(f"guess{n}@smtpadmin.test")[0] for n in range(19)]
        assert set(codes) == {550}
        client.putcmd("RCPT", "TO:<guess19@smtpadmin.test>")
        assert client.getreply()[0] == 550
        code, _ = client.getreply()
    assert code == 421
