"""MAIL FROM: the TLS and authentication requirements and the organization's sender filter;
and when AUTH is offered at all."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.smtp.addresses import NULL_PATH, ParsedAddress
from relay.smtp.config import ListenerConfig, OrganizationPolicy
from relay.smtp.policy import (
    auth_decision,
    auth_mechanisms,
    greeting_name_refusal,
    sender_decision,
)

DEFAULT = ListenerConfig(id=1)
ORG = OrganizationPolicy()
SENDER = ParsedAddress(address="Mallory@spam.test", domain="spam.test", local="Mallory")


def decision(
    sender: ParsedAddress = SENDER,
    config: ListenerConfig = DEFAULT,
    org: OrganizationPolicy = ORG,
    *,
    authenticated: bool = False,
    tls: bool = False,
) -> str:
    reply = sender_decision(sender, config=config, org=org, authenticated=authenticated, tls=tls)
    return "" if reply is None else str(reply)


def test_by_default_an_anonymous_sender_without_tls_may_start_a_transaction() -> None:
    assert decision() == ""
    assert decision(NULL_PATH) == ""


def test_require_tls_refuses_mail_before_starttls() -> None:
    config = replace(DEFAULT, require_tls=True)

    assert decision(config=config) == "530 5.7.0 Must issue a STARTTLS command first"
    assert decision(config=config, authenticated=True) == (
        "530 5.7.0 Must issue a STARTTLS command first"
    )
    assert decision(config=config, tls=True) == ""


def test_without_anonymous_access_a_client_must_authenticate_first() -> None:
    config = replace(DEFAULT, auth_anonymous=False)

    assert decision(config=config) == (
        "530 5.7.0 Authentication required: this virtual server does not take anonymous mail"
    )
    assert decision(config=config, authenticated=True) == ""


def test_the_sender_filter_refuses_listed_senders_only_when_applied() -> None:
    org = OrganizationPolicy(blocked_senders=("mallory@spam.test",))

    assert decision(org=org) == ""
    assert decision(config=replace(DEFAULT, apply_sender_filter=True), org=org) == (
        "550 5.7.1 Sender <Mallory@spam.test> is refused by this organization's sender filter"
    )


def test_the_sender_filter_refuses_a_whole_domain() -> None:
    org = OrganizationPolicy(blocked_senders=("*@spam.test",))
    config = replace(DEFAULT, apply_sender_filter=True)
    other = ParsedAddress(address="alice@ham.test", domain="ham.test", local="alice")

    assert decision(config=config, org=org).startswith("550 5.7.1 Sender <")
    assert decision(other, config=config, org=org) == ""


def test_the_blank_sender_filter_refuses_the_null_sender_only_when_applied() -> None:
    org = OrganizationPolicy(filter_blank_senders=True)
    config = replace(DEFAULT, apply_sender_filter=True)

    assert decision(NULL_PATH, org=org) == ""
    assert decision(NULL_PATH, config=config, org=org) == (
        "550 5.7.1 Mail from the null sender <> is refused by this organization's sender filter"
    )
    assert decision(NULL_PATH, config=config) == ""
    assert decision(config=config, org=org) == ""


def test_auth_is_offered_when_basic_authentication_is_on() -> None:
    assert auth_mechanisms(DEFAULT, tls=False) == ("PLAIN", "LOGIN")
    assert auth_decision(DEFAULT, tls=False) is None


def test_auth_is_neither_offered_nor_taken_when_basic_authentication_is_off() -> None:
    config = replace(DEFAULT, auth_basic=False)

    assert auth_mechanisms(config, tls=True) == ()
    assert str(auth_decision(config, tls=True)) == (
        "502 5.5.1 Authentication is not enabled on this virtual server"
    )


def test_auth_requiring_tls_is_refused_before_starttls() -> None:
    config = replace(DEFAULT, auth_basic_requires_tls=True)

    assert auth_mechanisms(config, tls=False) == ()
    assert str(auth_decision(config, tls=False)) == (
        "538 5.7.11 Encryption required for authentication: issue STARTTLS first"
    )
    assert auth_mechanisms(config, tls=True) == ("PLAIN", "LOGIN")
    assert auth_decision(config, tls=True) is None


def test_auth_is_offered_only_after_starttls_where_tls_is_required() -> None:
    config = replace(DEFAULT, require_tls=True)

    assert auth_mechanisms(config, tls=False) == ()
    assert auth_mechanisms(config, tls=True) == ("PLAIN", "LOGIN")


def test_auth_is_refused_inside_a_mail_transaction() -> None:
    assert str(auth_decision(DEFAULT, tls=True, in_transaction=True)) == (
        "503 5.5.1 AUTH is not permitted during a mail transaction; RSET first (RFC 4954 4)"
    )
    assert auth_decision(DEFAULT, tls=True, in_transaction=False) is None


@pytest.mark.parametrize("name", ["client.test", "[192.0.2.1]", "my_pc", "bücher.test", "x" * 255])
def test_a_greeting_name_of_printable_text_is_taken(name: str) -> None:
    assert greeting_name_refusal(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (b"\xff\xfe.test".decode("utf-8", "surrogateescape"), "not valid UTF-8"),
        ("client\x00.test", "control characters"),
        ("client\x1b.test", "control characters"),
        ("x" * 256, "longer than 255 octets"),
        ("ü" * 128, "longer than 255 octets"),
    ],
)
def test_a_greeting_name_that_cannot_be_stored_is_refused_saying_why(name: str, why: str) -> None:
    refusal = greeting_name_refusal(name)
    assert refusal is not None and refusal.code == 501
    assert refusal.text.startswith("5.5.2 ") and why in refusal.text
