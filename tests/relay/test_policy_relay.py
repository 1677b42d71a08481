"""The open-relay matrix: address tricks x client situations, each with the exact reply.

Every RCPT TO argument goes the way the protocol layer takes it: aiosmtpd's own parsing (which
may answer 553 itself), then ``parse_path``, then ``recipient_decision``. "250" = accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.snapshot import AcceptedDomainFacts
from relay.smtp.addresses import ParsedAddress
from relay.smtp.config import Directory, ListenerConfig, OrganizationPolicy
from relay.smtp.policy import accepted_domain, may_relay, recipient_decision
from tests.relay.test_addresses import read

DIRECTORY = Directory(
    accepted_domains=(
        AcceptedDomainFacts("smtpadmin.test", "authoritative"),
        AcceptedDomainFacts("*.branch.test", "authoritative"),
        AcceptedDomainFacts("xn--mnchen-3ya.test", "authoritative"),  # münchen.test
        AcceptedDomainFacts("partner.test", "external_relay"),
        AcceptedDomainFacts("internal.test", "internal_relay"),
        AcceptedDomainFacts("*.wild.test", "external_relay"),
    ),
    mailboxes=frozenset({"alice@smtpadmin.test", "bob@x.branch.test", "hans@xn--mnchen-3ya.test"}),
)
ORG = OrganizationPolicy()
CLOSED = ListenerConfig(id=1)  # the defaults: only the list below, empty; authenticated may relay


@dataclass(frozen=True)
class Client:
    ip: str = "203.0.113.9"
    name: str | None = None
    authenticated: bool = False
    config: ListenerConfig = CLOSED


OUTSIDER = Client()
LISTED_IP = Client(ip="198.51.100.7", config=replace(CLOSED, relay_list=("198.51.100.7",)))
UNLISTED_IP = Client(ip="198.51.100.8", config=LISTED_IP.config)
MAPPED_LISTED_IP = Client(ip="::ffff:198.51.100.7", config=LISTED_IP.config)
LISTED_CIDR = Client(ip="10.1.2.3", config=replace(CLOSED, relay_list=("10.1.0.0/16",)))
OUTSIDE_CIDR = Client(ip="10.2.0.1", config=LISTED_CIDR.config)
LISTED_V6_CIDR = Client(
    ip="2001:db8:1::25", config=replace(CLOSED, relay_list=("2001:db8:1::/48",))
)
RDNS_CONFIG = replace(CLOSED, relay_list=("trusted.test",))
LISTED_RDNS = Client(ip="192.0.2.50", name="mx1.trusted.test", config=RDNS_CONFIG)
LISTED_RDNS_APEX = Client(ip="192.0.2.50", name="TRUSTED.test.", config=RDNS_CONFIG)
LOOKALIKE_RDNS = Client(ip="192.0.2.50", name="mx1.untrusted.test", config=RDNS_CONFIG)
SUFFIX_RDNS = Client(ip="192.0.2.50", name="trusted.test.evil.test", config=RDNS_CONFIG)
UNKNOWN_RDNS = Client(ip="192.0.2.50", name=None, config=RDNS_CONFIG)
EMPTY_RDNS = Client(ip="192.0.2.50", name="", config=RDNS_CONFIG)
WILDCARD_RDNS_CONFIG = replace(CLOSED, relay_list=("*.trusted.test",))
WILDCARD_RDNS_SUB = Client(ip="192.0.2.50", name="mx1.trusted.test", config=WILDCARD_RDNS_CONFIG)
WILDCARD_RDNS_APEX = Client(ip="192.0.2.50", name="trusted.test", config=WILDCARD_RDNS_CONFIG)
AUTHENTICATED = Client(authenticated=True)
AUTHENTICATED_NOT_ALLOWED = Client(
    authenticated=True, config=replace(CLOSED, relay_allow_authenticated=False)
)
ALL_EXCEPT_CONFIG = replace(CLOSED, relay_mode="all_except_listed", relay_list=("203.0.113.0/24",))
ALL_EXCEPT_OTHER = Client(ip="192.0.2.99", config=ALL_EXCEPT_CONFIG)
ALL_EXCEPT_LISTED = Client(ip="203.0.113.9", config=ALL_EXCEPT_CONFIG)
ALL_EXCEPT_LISTED_MAPPED = Client(ip="::ffff:203.0.113.9", config=ALL_EXCEPT_CONFIG)
ALL_EXCEPT_LISTED_AUTHENTICATED = Client(
    ip="203.0.113.9", authenticated=True, config=ALL_EXCEPT_CONFIG
)
ALL_EXCEPT_LISTED_AUTHENTICATED_NOT_ALLOWED = Client(
    ip="203.0.113.9",
    authenticated=True,
    config=replace(ALL_EXCEPT_CONFIG, relay_allow_authenticated=False),
)
ALL_EXCEPT_EMPTY = Client(config=replace(CLOSED, relay_mode="all_except_listed"))

ACCEPT = "250"
RELAY_DENIED = "550 5.7.1"
NO_MAILBOX = "550 5.1.1"
NOT_ALLOWED = "553 5.1.3"  # parse_path: valid syntax we do not take (and aiosmtpd's own 553)
SYNTAX = "501 5.1.3"
UNROUTABLE = "553 5.1.3"


def answer(argument: str, client: Client, directory: Directory = DIRECTORY) -> str:
    """The status and enhanced code the client would read after RCPT TO:<argument>."""
    parsed = read(argument)
    if not isinstance(parsed, ParsedAddress):
        return str(parsed)[:9]
    reply = recipient_decision(
        parsed,
        client_ip=client.ip,
        client_name=client.name,
        authenticated=client.authenticated,
        config=client.config,
        org=ORG,
        directory=directory,
    )
    return ACCEPT if reply is None else str(reply)[:9]


MATRIX: list[tuple[str, Client, str]] = [
    # --- an anonymous client outside every list ---------------------------------------
    ("<victim@elsewhere.test>", OUTSIDER, RELAY_DENIED),
    ("victim@elsewhere.test", OUTSIDER, RELAY_DENIED),
    ("<VICTIM@ELSEWHERE.TEST>", OUTSIDER, RELAY_DENIED),
    ("<victim@elsewhere.test> NOTIFY=NEVER", OUTSIDER, RELAY_DENIED),
    ("<victim@elsewhere.test.>", OUTSIDER, NOT_ALLOWED),  # aiosmtpd's own 553
    ("<victim@elsewhere.test..>", OUTSIDER, NOT_ALLOWED),  # aiosmtpd's own 553
    ("<victim@elsewhere.test", OUTSIDER, SYNTAX),
    ("< victim@elsewhere.test >", OUTSIDER, SYNTAX),
    ("<@smtpadmin.test:victim@elsewhere.test>", OUTSIDER, NOT_ALLOWED),
    ("<@smtpadmin.test,@partner.test:victim@elsewhere.test>", OUTSIDER, NOT_ALLOWED),
    ("<@elsewhere.test:alice@smtpadmin.test>", OUTSIDER, NOT_ALLOWED),
    ("<victim%elsewhere.test@smtpadmin.test>", OUTSIDER, NO_MAILBOX),
    ("<victim%elsewhere.test@partner.test>", OUTSIDER, RELAY_DENIED),
    ("<victim%elsewhere.test@internal.test>", OUTSIDER, RELAY_DENIED),
    ("<victim%elsewhere.test@x.wild.test>", OUTSIDER, RELAY_DENIED),
    ("<elsewhere.test!victim@smtpadmin.test>", OUTSIDER, NO_MAILBOX),
    ("<elsewhere.test!victim@partner.test>", OUTSIDER, RELAY_DENIED),
    ('<"victim%elsewhere.test"@partner.test>', OUTSIDER, RELAY_DENIED),
    ('<"victim@elsewhere.test"@smtpadmin.test>', OUTSIDER, NOT_ALLOWED),
    ('<"victim@elsewhere.test"@partner.test>', OUTSIDER, NOT_ALLOWED),
    ("<victim@elsewhere.test@smtpadmin.test>", OUTSIDER, NOT_ALLOWED),  # aiosmtpd's own 553
    ("<=?utf-8?q?victim=40elsewhere.test?=@partner.test>", OUTSIDER, SYNTAX),
    ("<victim(x)@elsewhere.test>", OUTSIDER, SYNTAX),
    ("<victim@elsewhere.test%smtpadmin.test>", OUTSIDER, SYNTAX),
    ("<victim@[192.0.2.1]>", OUTSIDER, NOT_ALLOWED),
    ("<victim@[IPv6:2001:db8::1]>", OUTSIDER, NOT_ALLOWED),
    ("<victim@smtpadmin.test.elsewhere.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@evilsmtpadmin.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@evilpartner.test>", OUTSIDER, RELAY_DENIED),
    ("<alice@sub.smtpadmin.test>", OUTSIDER, RELAY_DENIED),  # exact domain: no sub-domains
    ("<victim@sub.partner.test>", OUTSIDER, RELAY_DENIED),
    ("<bob@x.branch.test>", OUTSIDER, ACCEPT),  # *.branch.test covers its sub-domains
    ("<bob@branch.test>", OUTSIDER, RELAY_DENIED),  # ... but not branch.test itself
    ("<bob@y.x.branch.test>", OUTSIDER, NO_MAILBOX),
    ("<carol@x.wild.test>", OUTSIDER, ACCEPT),
    ("<carol@wild.test>", OUTSIDER, RELAY_DENIED),
    ("<carol@xwild.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@partner.test>", OUTSIDER, ACCEPT),  # external relay domain
    ("<victim@internal.test>", OUTSIDER, ACCEPT),  # internal relay domain
    ("<victim@PARTNER.test>", OUTSIDER, ACCEPT),
    ("<alice@smtpadmin.test>", OUTSIDER, ACCEPT),
    ("<ALICE@SMTPADMIN.TEST>", OUTSIDER, ACCEPT),
    ('<"alice"@smtpadmin.test>', OUTSIDER, ACCEPT),
    ("<alice@ｓｍｔｐａｄｍｉｎ.test>", OUTSIDER, ACCEPT),
    ("<nobody@smtpadmin.test>", OUTSIDER, NO_MAILBOX),
    ('<"alice "@smtpadmin.test>', OUTSIDER, NO_MAILBOX),
    ("<hans@münchen.test>", OUTSIDER, ACCEPT),
    ("<hans@MÜNCHEN.test>", OUTSIDER, ACCEPT),
    ("<HANS@XN--MNCHEN-3YA.TEST>", OUTSIDER, ACCEPT),
    ("<hans@muenchen.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@bücher.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@xn--bcher-kva.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@ｅｌｓｅｗｈｅｒｅ.test>", OUTSIDER, RELAY_DENIED),
    ("<victim@localhost>", OUTSIDER, RELAY_DENIED),
    ("<postmaster@elsewhere.test>", OUTSIDER, RELAY_DENIED),
    ("<postmaster>", OUTSIDER, SYNTAX),
    ("<>", OUTSIDER, SYNTAX),
    # --- a client on the relay list by IP ---------------------------------------------
    ("<victim@elsewhere.test>", LISTED_IP, ACCEPT),
    ("<victim%elsewhere.test@partner.test>", LISTED_IP, ACCEPT),
    ("<elsewhere.test!victim@partner.test>", LISTED_IP, ACCEPT),
    ("<nobody@smtpadmin.test>", LISTED_IP, NO_MAILBOX),  # relay rights do not invent mailboxes
    ("<@smtpadmin.test:victim@elsewhere.test>", LISTED_IP, NOT_ALLOWED),
    ('<"victim@elsewhere.test"@partner.test>', LISTED_IP, NOT_ALLOWED),
    ("<victim@[192.0.2.1]>", LISTED_IP, NOT_ALLOWED),
    ('<"victim elsewhere"@elsewhere.test>', LISTED_IP, UNROUTABLE),
    ("<victim@elsewhere.test>", UNLISTED_IP, RELAY_DENIED),
    ("<victim@elsewhere.test>", MAPPED_LISTED_IP, ACCEPT),
    # --- by subnet --------------------------------------------------------------------
    ("<victim@elsewhere.test>", LISTED_CIDR, ACCEPT),
    ("<victim@elsewhere.test>", OUTSIDE_CIDR, RELAY_DENIED),
    ("<victim@elsewhere.test>", LISTED_V6_CIDR, ACCEPT),
    ("<victim%elsewhere.test@partner.test>", OUTSIDE_CIDR, RELAY_DENIED),
    # --- by reverse DNS domain (forward-confirmed name; None = unknown) ----------------
    ("<victim@elsewhere.test>", LISTED_RDNS, ACCEPT),
    ("<victim@elsewhere.test>", LISTED_RDNS_APEX, ACCEPT),
    ("<victim@elsewhere.test>", LOOKALIKE_RDNS, RELAY_DENIED),
    ("<victim@elsewhere.test>", SUFFIX_RDNS, RELAY_DENIED),
    ("<victim@elsewhere.test>", UNKNOWN_RDNS, RELAY_DENIED),
    ("<victim@elsewhere.test>", EMPTY_RDNS, RELAY_DENIED),
    ("<victim@elsewhere.test>", WILDCARD_RDNS_SUB, ACCEPT),
    ("<victim@elsewhere.test>", WILDCARD_RDNS_APEX, RELAY_DENIED),
    # --- authenticated clients ----------------------------------------------------------
    ("<victim@elsewhere.test>", AUTHENTICATED, ACCEPT),
    ("<victim%elsewhere.test@partner.test>", AUTHENTICATED, ACCEPT),
    ("<@smtpadmin.test:victim@elsewhere.test>", AUTHENTICATED, NOT_ALLOWED),
    ("<nobody@smtpadmin.test>", AUTHENTICATED, NO_MAILBOX),
    ("<victim@elsewhere.test>", AUTHENTICATED_NOT_ALLOWED, RELAY_DENIED),
    ("<victim%elsewhere.test@partner.test>", AUTHENTICATED_NOT_ALLOWED, RELAY_DENIED),
    ("<victim@partner.test>", AUTHENTICATED_NOT_ALLOWED, ACCEPT),
    ("<alice@smtpadmin.test>", AUTHENTICATED_NOT_ALLOWED, ACCEPT),
    # --- "all except the list below" --------------------------------------------------
    ("<victim@elsewhere.test>", ALL_EXCEPT_OTHER, ACCEPT),
    ("<victim@elsewhere.test>", ALL_EXCEPT_LISTED, RELAY_DENIED),
    ("<victim@elsewhere.test>", ALL_EXCEPT_LISTED_MAPPED, RELAY_DENIED),
    ("<victim%elsewhere.test@partner.test>", ALL_EXCEPT_LISTED, RELAY_DENIED),
    ("<victim@elsewhere.test>", ALL_EXCEPT_LISTED_AUTHENTICATED, ACCEPT),
    ("<victim@elsewhere.test>", ALL_EXCEPT_LISTED_AUTHENTICATED_NOT_ALLOWED, RELAY_DENIED),
    ("<victim@elsewhere.test>", ALL_EXCEPT_EMPTY, ACCEPT),  # the administrator opened it
    ("<@smtpadmin.test:victim@elsewhere.test>", ALL_EXCEPT_EMPTY, NOT_ALLOWED),
]


@pytest.mark.parametrize(
    ("argument", "client", "expected"),
    MATRIX,
    ids=[f"{i:03d}-{argument}" for i, (argument, _c, _e) in enumerate(MATRIX)],
)
def test_the_open_relay_matrix(argument: str, client: Client, expected: str) -> None:
    assert answer(argument, client) == expected


def test_the_matrix_is_large_enough() -> None:
    assert len(MATRIX) >= 40


# --- the replies in words -----------------------------------------------------------------


def decide(argument: str, client: Client = OUTSIDER) -> str:
    parsed = read(argument)
    assert isinstance(parsed, ParsedAddress), parsed
    reply = recipient_decision(
        parsed,
        client_ip=client.ip,
        client_name=client.name,
        authenticated=client.authenticated,
        config=client.config,
        org=ORG,
        directory=DIRECTORY,
    )
    return "" if reply is None else str(reply)


def test_relay_refusal_tells_the_client_to_authenticate_when_that_would_help() -> None:
    assert decide("<victim@elsewhere.test>") == (
        "550 5.7.1 Relaying denied: this server does not accept mail for elsewhere.test from "
        "unauthenticated clients; authenticate to relay"
    )


def test_relay_refusal_says_the_computer_may_not_relay_when_authenticating_would_not_help() -> None:
    assert decide("<victim@elsewhere.test>", AUTHENTICATED_NOT_ALLOWED) == (
        "550 5.7.1 Relaying denied: this server does not accept mail for elsewhere.test, and "
        "your computer is not allowed to relay through it"
    )


def test_it_refuses_an_unknown_mailbox_of_an_authoritative_domain_at_rcpt() -> None:
    assert decide("<nobody@SMTPADMIN.test>") == (
        "550 5.1.1 <nobody@smtpadmin.test>: no such mailbox here"
    )


def test_it_refuses_sender_specified_routing_through_a_relay_domain_in_words() -> None:
    assert decide("<victim%elsewhere.test@partner.test>") == (
        "550 5.7.1 Relaying denied: <victim%elsewhere.test@partner.test> names another "
        "destination inside the local part ('%', '!' or '@'); that routing is not accepted "
        "from this client"
    )


def test_it_refuses_local_parts_routing_cannot_carry_rather_than_bounce_them() -> None:
    assert decide('<"victim elsewhere"@partner.test>') == (
        '553 5.1.3 <"victim elsewhere"@partner.test>: this server cannot route a local part '
        "like this (letters, digits, dots and !#$%&'*+-/=?^_`{|}~ only)"
    )


def test_the_recipient_filter_applies_only_when_the_virtual_server_applies_it() -> None:
    org = OrganizationPolicy(blocked_recipients=("ceo@smtpadmin.test", "*@partner.test"))
    directory = replace(DIRECTORY, mailboxes=DIRECTORY.mailboxes | {"ceo@smtpadmin.test"})

    def with_filter(argument: str, on: bool) -> str:
        parsed = read(argument)
        assert isinstance(parsed, ParsedAddress)
        reply = recipient_decision(
            parsed,
            client_ip=OUTSIDER.ip,
            client_name=None,
            authenticated=False,
            config=replace(CLOSED, apply_recipient_filter=on),
            org=org,
            directory=directory,
        )
        return "" if reply is None else str(reply)

    assert with_filter("<CEO@smtpadmin.test>", on=True) == (
        "550 5.7.1 Recipient <CEO@smtpadmin.test> is refused by this organization's "
        "recipient filter"
    )
    assert with_filter("<anyone@partner.test>", on=True).startswith("550 5.7.1 Recipient")
    assert with_filter("<CEO@smtpadmin.test>", on=False) == ""
    assert with_filter("<alice@smtpadmin.test>", on=True) == ""


def test_a_bare_star_accepted_domain_is_ignored_rather_than_opening_the_relay() -> None:
    directory = Directory(accepted_domains=(AcceptedDomainFacts("*", "external_relay"),))

    assert accepted_domain("elsewhere.test", directory) is None
    assert answer("<victim@elsewhere.test>", OUTSIDER, directory) == RELAY_DENIED


def test_the_most_specific_accepted_domain_decides() -> None:
    directory = Directory(
        accepted_domains=(
            AcceptedDomainFacts("*.corp.test", "external_relay"),
            AcceptedDomainFacts("mail.corp.test", "authoritative"),
        ),
        mailboxes=frozenset({"alice@mail.corp.test"}),
    )

    assert answer("<nobody@mail.corp.test>", OUTSIDER, directory) == NO_MAILBOX
    assert answer("<anyone@other.corp.test>", OUTSIDER, directory) == ACCEPT


def test_may_relay_follows_the_modes_and_the_authentication_box() -> None:
    assert not may_relay("203.0.113.9", None, False, CLOSED)
    assert may_relay("203.0.113.9", None, True, CLOSED)
    assert not may_relay("203.0.113.9", None, True, AUTHENTICATED_NOT_ALLOWED.config)
    assert may_relay("192.0.2.1", None, False, ALL_EXCEPT_CONFIG)
    assert not may_relay("203.0.113.1", None, False, ALL_EXCEPT_CONFIG)
    assert not may_relay("198.51.100.7", None, False, replace(CLOSED, relay_mode="bogus"))


# --- properties ---------------------------------------------------------------------------

_LOCAL = st.lists(
    st.sampled_from(["alice", "bob", "hans", "victim", "%", "!", ".", '"', "@", "\\", " ", "ü"]),
    min_size=1,
    max_size=6,
).map("".join)
_DOMAIN = st.sampled_from(
    [
        "smtpadmin.test",
        "SMTPADMIN.TEST",
        "sub.smtpadmin.test",
        "x.branch.test",
        "branch.test",
        "partner.test",
        "x.wild.test",
        "wild.test",
        "münchen.test",
        "elsewhere.test",
        "elsewhere.test.",
        "[192.0.2.1]",
        "smtpadmin.test@elsewhere.test",
        "elsewhere.test@smtpadmin.test",
        "ｅｌｓｅｗｈｅｒｅ.test",
    ]
)
_ROUTE = st.sampled_from(["", "@smtpadmin.test:", "@a.test,@b.test:"])


@settings(max_examples=500, deadline=None)
@given(
    route=_ROUTE,
    local=_LOCAL,
    domain=_DOMAIN,
    ip=st.sampled_from(["203.0.113.9", "::ffff:203.0.113.9", "2001:db8::9"]),
    name=st.sampled_from([None, "", "mx.elsewhere.test", "smtpadmin.test"]),
)
def test_an_anonymous_unlisted_client_never_reaches_a_domain_that_is_not_accepted(
    route: str, local: str, domain: str, ip: str, name: str | None
) -> None:
    argument = f"<{route}{local}@{domain}>"
    client = Client(ip=ip, name=name)
    if answer(argument, client) != ACCEPT:
        return
    parsed = read(argument)
    assert isinstance(parsed, ParsedAddress)
    accepted = accepted_domain(parsed.domain, DIRECTORY)
    assert accepted is not None, argument
    if accepted.type == "authoritative":
        assert parsed.address.lower() in DIRECTORY.mailboxes
    else:
        assert not any(c in parsed.local for c in "%!@"), argument
    assert not route
