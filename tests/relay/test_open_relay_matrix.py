"""The open-relay matrix, over real sockets against the real listener: one row per case, with the
virtual server's configuration, how the client presents itself (address, authentication), the
sender, the RCPT TO argument as sent and the reply code expected at RCPT.

Nothing may reach a domain this organization does not receive mail for unless the administrator
let that client relay; address tricks (source routes, '%' and '!' routing, quoted '@', encoded
words, comments, address literals) are refused whoever sends them. Every row names an exact
code, so a relay answering anything else fails it; refused rows also check that no message can
be sent afterwards, and positive rows keep the refusals honest (a relay refusing everything
fails them).

The organization: smtpadmin.test (authoritative, mailboxes alice and bob), partner.test and
*.wild.test (internal relay), ext.test (external relay), münchen.test (internal relay, IDNA).
"""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.models import AddressSpace, Connector
from relay.models import Message
from servers.models import AcceptedDomain, RoutingGroup, SmtpCredential, VirtualServer
from tests.relay.harness import RelayThread, free_port
from tests.relay.world import PASSWORD, World

Relay = Callable[..., RelayThread]

OUTSIDER = "<someone@outside.test>"
ONLY = "only_listed"
ALL_EXCEPT = "all_except_listed"
ALL_ADDRESSES: dict[str, Any] = {"ip_address": None}  # listens on ::1 as well


@dataclass(frozen=True)
class Case:
    rcpt: str  # the argument after "RCPT TO:", exactly as sent
    code: int  # the reply code expected at RCPT
    sender: str = OUTSIDER  # the argument after "MAIL FROM:"
    settings: dict[str, Any] = field(default_factory=dict)  # virtual server fields
    client: str = "127.0.0.1"  # the client's address (loopback only)
    auth: str = ""  # "", "ok", "wrong password", "disabled", "elsewhere"
    connector: str = ""  # a connector allowing relay to this address space
    bridgehead: bool = True  # the virtual server is the connector's bridgehead (else another)
    enabled: bool = True  # the connector is enabled
    relay: bool = True  # its "allow messages to be relayed to these domains" box
    utf8: bool = False  # MAIL FROM ... SMTPUTF8


def row(case_id: str, rcpt: str, code: int, **facts: Any) -> Any:
    return pytest.param(Case(rcpt, code, **facts), id=case_id)


def relay_list(*entries: str, mode: str = ONLY, **more: Any) -> dict[str, Any]:
    return {"relay_mode": mode, "relay_list": list(entries), **more}


LONG_LOCAL = "l" * 64
LONG_DOMAIN = ".".join(["d" * 60] * 3) + ".test"  # 188 octets: valid, and not ours

MATRIX = [
    # --- anonymous client, relay for "only the list", empty list: plain addresses ----------
    row("outside-domain", "<victim@elsewhere.test>", 550),
    row("no-angle-brackets", "victim@elsewhere.test", 550),
    row("upper-case", "<VICTIM@ELSEWHERE.TEST>", 550),
    row("mixed-case", "<victim@ElseWhere.Test>", 550),
    row("trailing-dot", "<victim@elsewhere.test.>", 553),
    row("two-trailing-dots", "<victim@elsewhere.test..>", 553),
    row("blanks-inside-brackets", "< victim@elsewhere.test >", 501),
    row("trailing-tab", "<victim@elsewhere.test>\t", 550),
    row("unknown-parameter", "<victim@elsewhere.test> NOTIFY=NEVER", 555),
    row("own-fqdn", "<victim@mx.relay.test>", 550),
    row("localhost", "<victim@localhost>", 550),
    row("postmaster-elsewhere", "<postmaster@elsewhere.test>", 550),
    row("accepted-domain-as-prefix", "<victim@smtpadmin.test.elsewhere.test>", 550),
    row("sub-domain-of-authoritative", "<victim@sub.smtpadmin.test>", 550),
    row("leading-dot-domain", "<victim@.smtpadmin.test>", 553),
    row("punycode-outside", "<victim@xn--bcher-kva.test>", 550),
    row("utf8-outside", "<victim@bücher.test>", 550, utf8=True),
    row("utf8-without-smtputf8", "<victim@bücher.test>", 553),
    row("long-outside-domain", f"<victim@{LONG_DOMAIN}>", 550),
    # --- source routes ----------------------------------------------------------------------
    row("source-route", "<@smtpadmin.test:victim@elsewhere.test>", 553),
    row("source-route-two-hops", "<@smtpadmin.test,@mx.relay.test:victim@elsewhere.test>", 553),
    row("source-route-to-accepted", "<@elsewhere.test:alice@smtpadmin.test>", 553),
    row("route-without-at", "<smtpadmin.test:victim@elsewhere.test>", 501),
    # --- '%' hack and '!' bang paths ----------------------------------------------------------
    row("percent-at-authoritative", "<victim%elsewhere.test@smtpadmin.test>", 550),
    row("percent-at-internal-relay", "<victim%elsewhere.test@partner.test>", 550),
    row("percent-at-external-relay", "<victim%elsewhere.test@ext.test>", 550),
    row("percent-at-wildcard-relay", "<victim%elsewhere.test@a.wild.test>", 550),
    row("percent-quoted", '<"victim%elsewhere.test"@partner.test>', 550),
    row("percent-encoded-at", "<victim%40elsewhere.test@partner.test>", 550),
    row("percent-in-domain", "<victim@elsewhere.test%smtpadmin.test>", 501),
    row("bang-at-authoritative", "<elsewhere.test!victim@smtpadmin.test>", 550),
    row("bang-at-internal-relay", "<elsewhere.test!victim@partner.test>", 550),
    row("bang-quoted", '<"elsewhere.test!victim"@partner.test>', 550),
    # --- '@' in local parts -------------------------------------------------------------------
    row("quoted-at-authoritative", '<"victim@elsewhere.test"@smtpadmin.test>', 553),
    row("quoted-at-internal-relay", '<"victim@elsewhere.test"@partner.test>', 553),
    row("quoted-escaped-at", '<"victim\\@elsewhere.test"@partner.test>', 553),
    row("quoted-at-no-domain", '<"victim@elsewhere.test">', 501),
    row("quoted-plain-local-outside", '<"victim"@elsewhere.test>', 550),
    row("two-ats-accepted-last", "<victim@elsewhere.test@smtpadmin.test>", 553),
    row("two-ats-accepted-first", "<victim@smtpadmin.test@elsewhere.test>", 553),
    row("escaped-at-unquoted", "<victim\\@elsewhere.test@partner.test>", 553),
    row("comma-list", "<alice@smtpadmin.test,victim@elsewhere.test>", 501),
    row("empty-domain", "<victim@partner.test@>", 553),
    # --- address literals ---------------------------------------------------------------------
    row("literal-outside", "<victim@[192.0.2.1]>", 553),
    row("literal-loopback", "<victim@[127.0.0.1]>", 553),
    row("literal-ipv6", "<victim@[IPv6:2001:db8::1]>", 553),
    row("literal-ipv6-loopback", "<victim@[IPv6:::1]>", 553),
    row("quoted-at-literal", '<"victim@elsewhere.test"@[127.0.0.1]>', 553),
    # --- comments, blanks, encoded words --------------------------------------------------------
    row("comment-in-local", "<alice(x)@smtpadmin.test>", 501),
    row("comment-outside", "<victim(x)@elsewhere.test>", 501),
    row("comment-after-domain", "<alice@smtpadmin.test(x)>", 501),
    row("blank-before-at", "<alice @smtpadmin.test>", 501),
    row("blank-after-at", "<alice@ smtpadmin.test>", 501),
    row("encoded-word", "<=?utf-8?q?victim=40elsewhere.test?=@smtpadmin.test>", 501),
    row("encoded-word-relay", "<=?utf-8?q?victim=40elsewhere.test?=@partner.test>", 501),
    row("nul-in-domain", "<victim@elsewhere.test\0.partner.test>", 501),
    row("nul-between-addresses", "<alice@smtpadmin.test\0victim@elsewhere.test>", 553),
    row("text-after-path", "<alice@smtpadmin.test>victim@elsewhere.test", 501),
    row("second-path-as-parameter", "<alice@smtpadmin.test> <victim@elsewhere.test>", 501),
    row("blank-after-colon", " <victim@elsewhere.test>", 550),
    row("soft-hyphen-outside", "<victim@else\u00adwhere.test>", 501, utf8=True),
    # --- postmaster, null and long addresses ----------------------------------------------------
    row("postmaster-without-domain", "<postmaster>", 501),
    row("postmaster-without-domain-upper", "<Postmaster>", 501),
    row("null-recipient", "<>", 501),
    row("local-part-65", f"<{LONG_LOCAL}l@partner.test>", 501),
    row("local-part-64", f"<{LONG_LOCAL}@partner.test>", 250),
    row("path-over-256", f"<{LONG_LOCAL}@{LONG_DOMAIN}.partner.test>", 501),
    # --- what the organization does receive (these must stay open) ------------------------------
    row("mailbox", "<alice@smtpadmin.test>", 250),
    row("mailbox-upper-case", "<ALICE@SMTPADMIN.TEST>", 250),
    row("mailbox-trailing-dot", "<alice@smtpadmin.test.>", 553),
    row("mailbox-quoted-local", '<"alice"@smtpadmin.test>', 250),
    row("unknown-mailbox", "<nobody@smtpadmin.test>", 550),
    row("postmaster-without-mailbox", "<postmaster@smtpadmin.test>", 550),
    row("internal-relay", "<anyone@partner.test>", 250),
    row("external-relay", "<anyone@ext.test>", 250),
    row("wildcard-sub-domain", "<u@a.wild.test>", 250),
    row("wildcard-parent", "<u@wild.test>", 550),
    row("wildcard-as-prefix", "<u@a.wild.test.elsewhere.test>", 550),
    row("wildcard-suffix-lookalike", "<u@evilwild.test>", 550),
    row("idna-accepted-punycode", "<u@xn--mnchen-3ya.test>", 250),
    row("idna-accepted-upper-punycode", "<u@XN--MNCHEN-3YA.TEST>", 250),
    row("idna-accepted-utf8", "<u@münchen.test>", 250, utf8=True),
    # --- senders ------------------------------------------------------------------------------
    row("null-sender-outside", "<victim@elsewhere.test>", 550, sender="<>"),
    row("null-sender-mailbox", "<alice@smtpadmin.test>", 250, sender="<>"),
    row("own-domain-sender", "<victim@elsewhere.test>", 550, sender="<alice@smtpadmin.test>"),
    row("literal-sender", "<victim@elsewhere.test>", 550, sender="<spam@[127.0.0.1]>"),
    row("source-routed-sender", "<alice@smtpadmin.test>", 503, sender="<@a.test:spam@b.test>"),
    row("quoted-at-sender", "<alice@smtpadmin.test>", 503, sender='<"a@b.test"@outside.test>'),
    # --- the relay list -------------------------------------------------------------------------
    row("listed-ip", "<friend@elsewhere.test>", 250, settings=relay_list("127.0.0.1")),
    row("listed-subnet", "<friend@elsewhere.test>", 250, settings=relay_list("127.0.0.0/8")),
    row("other-subnet-listed", "<friend@elsewhere.test>", 550, settings=relay_list("10.0.0.0/8")),
    row("listed-domain-no-rdns", "<friend@elsewhere.test>", 550, settings=relay_list("trust.test")),
    row(
        "other-ip-listed",
        "<friend@elsewhere.test>",
        550,
        settings=relay_list("127.0.0.1"),
        client="127.0.0.2",
    ),
    row(
        "small-subnet-inside",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("127.0.0.0/30"),
        client="127.0.0.2",
    ),
    row(
        "small-subnet-outside",
        "<friend@elsewhere.test>",
        550,
        settings=relay_list("127.0.0.0/30"),
        client="127.0.0.5",
    ),
    row(
        "listed-source-route",
        "<@mx.relay.test:friend@elsewhere.test>",
        553,
        settings=relay_list("127.0.0.1"),
    ),
    row("listed-literal", "<friend@[192.0.2.1]>", 553, settings=relay_list("127.0.0.1")),
    row(
        "listed-quoted-at",
        '<"friend@elsewhere.test"@partner.test>',
        553,
        settings=relay_list("127.0.0.1"),
    ),
    row(
        "except-list-client-listed",
        "<friend@elsewhere.test>",
        550,
        settings=relay_list("127.0.0.1", mode=ALL_EXCEPT),
    ),
    row(
        "except-list-client-not-listed",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("10.0.0.1", mode=ALL_EXCEPT),
    ),
    row(
        "except-list-other-client",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("127.0.0.1", mode=ALL_EXCEPT),
        client="127.0.0.2",
    ),
    row(
        "except-list-percent",
        "<victim%elsewhere.test@partner.test>",
        550,
        settings=relay_list("127.0.0.1", mode=ALL_EXCEPT),
    ),
    row("except-empty-list", "<friend@elsewhere.test>", 250, settings=relay_list(mode=ALL_EXCEPT)),
    row(
        "except-list-mapped-ipv4-entry",
        "<victim@elsewhere.test>",
        550,
        settings=relay_list("::ffff:127.0.0.1", mode=ALL_EXCEPT, **ALL_ADDRESSES),
    ),
    row(
        "mapped-ipv4-entry",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("::ffff:127.0.0.1", **ALL_ADDRESSES),
    ),
    # --- authentication -------------------------------------------------------------------------
    row("authenticated", "<friend@elsewhere.test>", 250, auth="ok"),
    row(
        "authenticated-box-off",
        "<friend@elsewhere.test>",
        550,
        auth="ok",
        settings={"relay_allow_authenticated": False},
    ),
    row("wrong-password", "<friend@elsewhere.test>", 550, auth="wrong password"),
    row("disabled-credential", "<friend@elsewhere.test>", 550, auth="disabled"),
    row("credential-of-another-virtual-server", "<friend@elsewhere.test>", 550, auth="elsewhere"),
    row("authenticated-source-route", "<@a.test:friend@elsewhere.test>", 553, auth="ok"),
    row("authenticated-literal", "<friend@[192.0.2.1]>", 553, auth="ok"),
    row("authenticated-quoted-at", '<"friend@elsewhere.test"@partner.test>', 553, auth="ok"),
    # --- an IPv6 client on ::1 ------------------------------------------------------------------
    row("ipv6-anonymous", "<victim@elsewhere.test>", 550, settings=ALL_ADDRESSES, client="::1"),
    row("ipv6-mailbox", "<alice@smtpadmin.test>", 250, settings=ALL_ADDRESSES, client="::1"),
    row(
        "ipv6-listed",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("::1", **ALL_ADDRESSES),
        client="::1",
    ),
    row(
        "ipv6-only-ipv4-listed",
        "<victim@elsewhere.test>",
        550,
        settings=relay_list("127.0.0.1", **ALL_ADDRESSES),
        client="::1",
    ),
    row(
        "ipv6-ipv4-subnet-listed",
        "<victim@elsewhere.test>",
        550,
        settings=relay_list("127.0.0.0/8", **ALL_ADDRESSES),
        client="::1",
    ),
    row(
        "ipv6-except-list-client-listed",
        "<victim@elsewhere.test>",
        550,
        settings=relay_list("::1", mode=ALL_EXCEPT, **ALL_ADDRESSES),
        client="::1",
    ),
    row(
        "ipv6-except-list-ipv4-listed",
        "<friend@elsewhere.test>",
        250,
        settings=relay_list("127.0.0.1", mode=ALL_EXCEPT, **ALL_ADDRESSES),
        client="::1",
    ),
    row(
        "ipv6-literal-listed",
        "<friend@[IPv6:::1]>",
        553,
        settings=relay_list("::1", **ALL_ADDRESSES),
        client="::1",
    ),
    # --- connectors that allow relay to their address space ---------------------------------
    # "Allow messages to be relayed to these domains": every bridgehead of the connector takes
    # mail for its address space from anyone (a backup MX), and nothing else. An address space
    # '*' with it would open relay to every domain (Exchange 2003 did): it opens nothing.
    row("connector-allows-domain", "<u@conn.test>", 250, connector="conn.test"),
    row("connector-allows-subdomain", "<u@a.sub.test>", 250, connector="*.sub.test"),
    row("connector-allows-not-parent", "<u@sub.test>", 550, connector="*.sub.test"),
    row("connector-allows-not-other", "<victim@elsewhere.test>", 550, connector="conn.test"),
    row("connector-allows-not-suffix", "<u@evilconn.test>", 550, connector="conn.test"),
    row("connector-percent-hack", "<victim%elsewhere.test@conn.test>", 550, connector="conn.test"),
    row("connector-bang-hack", "<elsewhere.test!victim@conn.test>", 550, connector="conn.test"),
    row("connector-not-bridgehead", "<u@conn.test>", 550, connector="conn.test", bridgehead=False),
    row("connector-disabled", "<u@conn.test>", 550, connector="conn.test", enabled=False),
    row("connector-without-relay-box", "<u@conn.test>", 550, connector="conn.test", relay=False),
    row("connector-allows-everything", "<victim@elsewhere.test>", 550, connector="*"),
    row(
        "connector-listed-client",
        "<u@conn.test>",
        250,
        connector="conn.test",
        settings=relay_list("127.0.0.1"),
    ),
]


def organization(world: World) -> None:
    for domain, kind in (
        ("ext.test", AcceptedDomain.Type.EXTERNAL_RELAY),
        ("*.wild.test", AcceptedDomain.Type.INTERNAL_RELAY),
        ("münchen.test", AcceptedDomain.Type.INTERNAL_RELAY),
    ):
        accepted = AcceptedDomain(domain=domain, type=kind)
        accepted.full_clean()
        accepted.save()


def present(case: Case, world: World) -> None:
    """Set up the configuration of the row before the relay starts."""
    if case.settings:
        world.configure(**case.settings)
    credential = world.credential
    if case.auth == "disabled":
        SmtpCredential.objects.filter(pk=credential.pk).update(enabled=False)
    if case.auth == "elsewhere":
        other = VirtualServer.objects.create(
            server=world.server, name="Elsewhere", ip_address="127.0.0.1", port=free_port()
        )
        credential.virtual_servers.set([other])
    if case.connector:
        connector = Connector.objects.create(
            name="Partner link",
            routing_group=RoutingGroup.first(),
            allow_relay=case.relay,
            enabled=case.enabled,
        )
        bridgehead = world.vs
        if not case.bridgehead:
            bridgehead = VirtualServer.objects.create(
                server=world.server, name="Backup MX", ip_address="127.0.0.1", port=free_port()
            )
        connector.bridgeheads.set([bridgehead])
        AddressSpace.objects.create(connector=connector, domain=case.connector)


def authenticate(client: smtplib.SMTP, how: str) -> None:
    password = "wrong" if how == "wrong password" else PASSWORD
    token = base64.b64encode(f"\0relayuser\0{password}".encode()).decode()
    code, reply = client.docmd("AUTH", f"PLAIN {token}")
    assert code == (235 if how == "ok" else 535), reply


@pytest.mark.parametrize("case", MATRIX)
def test_open_relay_matrix(world: World, relay: Relay, case: Case) -> None:
    organization(world)
    present(case, world)
    relay(world.server)
    host = "::1" if ":" in case.client else "127.0.0.1"
    source = (case.client, 0)
    with smtplib.SMTP(host, world.port, "client.test", 10, source_address=source) as client:
        client.command_encoding = "utf-8"
        client.ehlo()
        if case.auth:
            authenticate(client, case.auth)
        client.docmd("MAIL FROM:" + case.sender + (" SMTPUTF8" if case.utf8 else ""))
        code, reply = client.docmd("RCPT TO:" + case.rcpt)
        assert code == case.code, reply
        if code >= 400:
            # Nothing can be sent after a refusal.
            assert client.docmd("DATA")[0] == 503
    assert not Message.objects.exists()


def test_the_matrix_has_every_kind_of_row() -> None:
    cases = [param.values[0] for param in MATRIX]
    assert len(cases) >= 60
    assert len({param.id for param in MATRIX}) == len(MATRIX)
    assert {case.code for case in cases} >= {250, 501, 503, 550, 553, 555}
    assert {case.auth for case in cases} >= {"", "ok", "wrong password", "disabled", "elsewhere"}
    assert {case.client for case in cases} >= {"127.0.0.1", "127.0.0.2", "::1"}
    assert sum(case.code == 250 for case in cases) >= 15  # the relay is not just closed shut
