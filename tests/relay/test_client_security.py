"""The outbound SMTP client's security against loopback sinks: STARTTLS opportunistic and
required, certificate verification on and off, HELO instead of EHLO, AUTH PLAIN/LOGIN to the
next hop with the stored credentials."""

from __future__ import annotations

import pytest

from relay.delivery.client import OutboundOptions
from relay.delivery.nexthop import Hop, HopPlan, plan_mx
from relay.dns import make_sync_resolver
from tests.dnsserver import DnsServer
from tests.relay.outbound import HELO, OK, OPTIONS, message, plan, replies, send_all
from tests.sinks import SinkFactory

pytestmark = pytest.mark.usefixtures("no_socket_left_open")


# -- STARTTLS --------------------------------------------------------------------------------


def test_opportunistic_tls_is_used_when_offered(sink: SinkFactory) -> None:
    mx = sink(tls=True)
    options = OutboundOptions(HELO, tls="opportunistic", ca_file=mx.ca_file)

    result = send_all(plan(mx), [message()], options)

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert mx.verbs() == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert mx.messages[0].tls is True


def test_opportunistic_tls_sends_in_the_clear_when_not_offered(sink: SinkFactory) -> None:
    mx = sink()

    result = send_all(plan(mx), [message()], OutboundOptions(HELO, tls="opportunistic"))

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert "STARTTLS" not in mx.verbs()
    assert mx.messages[0].tls is False


def test_required_tls_never_sends_in_the_clear(sink: SinkFactory) -> None:
    plain = sink()

    result = send_all(plan(plain), [message()], OutboundOptions(HELO, tls="required"))

    assert result.results == ()
    assert result.connection_level is True
    assert result.connection_error == (
        f"4.7.10 TLS required by policy but not offered by [127.0.0.1]:{plain.port}"
    )
    assert plain.verbs() == ["EHLO", "QUIT"]
    assert plain.messages == []


def test_required_tls_moves_on_to_a_hop_that_offers_it(sink: SinkFactory) -> None:
    plain, secure = sink(), sink(tls=True)
    options = OutboundOptions(HELO, tls="required", ca_file=secure.ca_file)

    result = send_all(plan(plain, secure), [message()], options)

    assert result.hop == f"[127.0.0.1]:{secure.port}"
    assert secure.messages[0].tls is True
    assert plain.messages == []


def test_the_certificate_is_checked_against_the_mx_name(
    sink: SinkFactory, dns_server: DnsServer
) -> None:
    mx = sink(tls=True, names=["mx1.example.org"])
    dns_server.add("example.org", "MX", "10 mx1.example.org")
    dns_server.host("mx1.example.org", "127.0.0.1")
    hops = plan_mx("example.org", mx.port, make_sync_resolver())
    options = OutboundOptions(HELO, tls="required", tls_verify=True, ca_file=mx.ca_file)

    result = send_all(hops, [message()], options)

    assert result.hop == f"mx1.example.org [127.0.0.1]:{mx.port}"
    assert replies(result) == {1: {"bob@example.org": OK}}
    assert mx.messages[0].tls is True


def test_a_certificate_for_another_name_is_refused(sink: SinkFactory) -> None:
    mx = sink(tls=True, names=["mx1.example.org"])
    hops = HopPlan((Hop("mx9.other.example", "127.0.0.1", mx.port),))
    options = OutboundOptions(HELO, tls="required", ca_file=mx.ca_file)

    result = send_all(hops, [message()], options)

    assert result.connection_error.startswith(
        f"4.7.5 TLS certificate of mx9.other.example [127.0.0.1]:{mx.port} not accepted:"
        " Hostname mismatch"
    )
    assert mx.messages == []


def test_a_certificate_from_an_unknown_ca_is_refused_when_verifying(sink: SinkFactory) -> None:
    mx, backup = sink(tls=True), sink()
    options = OutboundOptions(HELO, tls="opportunistic", tls_verify=True)  # no ca_file

    result = send_all(plan(mx, backup), [message()], options)

    assert result.hop_errors == (
        f"4.7.5 TLS certificate of [127.0.0.1]:{mx.port} not accepted: self-signed certificate",
    )
    assert mx.messages == []
    assert result.hop == f"[127.0.0.1]:{backup.port}"


def test_without_verification_any_certificate_will_do(sink: SinkFactory) -> None:
    mx = sink(tls=True)
    options = OutboundOptions(HELO, tls="required", tls_verify=False)

    result = send_all(
        HopPlan((Hop("wrong.name.example", "127.0.0.1", mx.port),)), [message()], options
    )

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert mx.messages[0].tls is True


# -- HELO and AUTH ---------------------------------------------------------------------------


def test_it_can_say_helo_instead_of_ehlo(sink: SinkFactory) -> None:
    mx = sink(tls=True)
    options = OutboundOptions(HELO, use_helo=True, tls="opportunistic")

    result = send_all(plan(mx), [message()], options)

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert mx.commands[0] == f"HELO {HELO}"
    assert "STARTTLS" not in mx.verbs()  # HELO negotiates nothing
    assert mx.messages[0].mail_options == []  # and declares nothing (no SIZE)


def test_required_tls_with_helo_explains_why_it_cannot_work(sink: SinkFactory) -> None:
    mx = sink(tls=True)

    result = send_all(plan(mx), [message()], OutboundOptions(HELO, use_helo=True, tls="required"))

    assert result.connection_error == (
        f"4.7.10 TLS required by policy but not offered by [127.0.0.1]:{mx.port}"
        " (HELO is configured: no STARTTLS)"
    )


def test_a_server_that_refuses_ehlo_is_greeted_with_helo(sink: SinkFactory) -> None:
    mx = sink(esmtp=False)

    result = send_all(plan(mx), [message()], OPTIONS)

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert mx.verbs()[:3] == ["EHLO", "HELO", "MAIL"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_it_authenticates_with_the_stored_credentials(sink: SinkFactory, mechanism: str) -> None:
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    mx = sink(auth=("relay-user", "s3cret pässword"), auth_exclude=[other])
    options = OutboundOptions(HELO, username="relay-user", password="s3cret pässword")

    result = send_all(plan(mx), [message()], options)

    assert replies(result) == {1: {"bob@example.org": OK}}
    assert f"AUTH {mechanism}" in mx.commands
    assert mx.messages[0].auth_user == "relay-user"


def test_authentication_goes_inside_tls_when_there_is_tls(sink: SinkFactory) -> None:
    mx = sink(tls=True, auth=("relay-user", "s3cret"))
    options = OutboundOptions(
        HELO, tls="required", ca_file=mx.ca_file, username="relay-user", password="s3cret"
    )

    send_all(plan(mx), [message()], options)

    assert mx.verbs()[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    assert mx.messages[0].tls is True


def test_refused_credentials_are_the_reply_of_every_recipient(sink: SinkFactory) -> None:
    mx = sink(auth=("relay-user", "s3cret"))
    options = OutboundOptions(HELO, username="relay-user", password="wrong")

    result = send_all(plan(mx), [message(1), message(2, "carol@example.org")], options)

    refused = "535 5.7.8 Authentication credentials invalid"
    assert replies(result) == {1: {"bob@example.org": refused}, 2: {"carol@example.org": refused}}
    assert result.results[0].recipients["bob@example.org"].permanent
    assert mx.verbs() == ["EHLO", "AUTH", "QUIT"]


def test_a_temporary_authentication_failure_makes_the_mail_wait(sink: SinkFactory) -> None:
    mx = sink(auth=("relay-user", "s3cret"))
    mx.auth_failure = "454 4.7.0 Temporary authentication failure"
    options = OutboundOptions(HELO, username="relay-user", password="s3cret-but-ldap-is-down")

    result = send_all(plan(mx), [message()], options)

    assert replies(result) == {1: {"bob@example.org": "454 4.7.0 Temporary authentication failure"}}
    assert not result.results[0].recipients["bob@example.org"].permanent


def test_a_hop_that_wants_authentication_refuses_mail_without_it(sink: SinkFactory) -> None:
    mx = sink(auth=("relay-user", "s3cret"))

    result = send_all(plan(mx), [message()], OPTIONS)

    assert replies(result) == {1: {"bob@example.org": "530 5.7.0 Authentication required"}}


def test_credentials_with_helo_cannot_authenticate(sink: SinkFactory) -> None:
    mx = sink(auth=("relay-user", "s3cret"))
    options = OutboundOptions(HELO, use_helo=True, username="relay-user", password="s3cret")

    result = send_all(plan(mx), [message()], options)

    assert result.connection_error == (
        f"4.7.0 AUTH needs EHLO, but HELO is configured for [127.0.0.1]:{mx.port}"
    )
    assert mx.messages == []
