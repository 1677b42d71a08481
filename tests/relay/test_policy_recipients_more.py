"""RCPT decisions beyond accepted domains and the relay list: the organization's directory
filter switch, the address spaces a connector lets its bridgeheads relay to, and a sender the
delivery restrictions of every matching connector refuse. Pure: the session's snapshots in,
the reply out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.snapshot import (
    AcceptedDomainFacts,
    AddressSpaceFacts,
    ConnectorFacts,
    DeliveryRestrictions,
    Topology,
)
from relay.smtp.addresses import ParsedAddress
from relay.smtp.config import Directory, ListenerConfig, OrganizationPolicy
from relay.smtp.policy import connector_refusal, recipient_decision
from tests.relay.test_addresses import read

DIRECTORY = Directory(
    accepted_domains=(AcceptedDomainFacts("smtpadmin.test", "authoritative"),),
    mailboxes=frozenset({"alice@smtpadmin.test"}),
)
CLOSED = ListenerConfig(id=1)
BACKUP_MX = replace(CLOSED, relay_patterns=frozenset({"conn.test", "*.sub.test"}))
FILTERING = OrganizationPolicy()
NOT_FILTERING = OrganizationPolicy(filter_unknown_recipients=False)


def answer(
    argument: str,
    *,
    config: ListenerConfig = CLOSED,
    org: OrganizationPolicy = FILTERING,
) -> str:
    parsed = read(argument)
    assert isinstance(parsed, ParsedAddress)
    reply = recipient_decision(
        parsed,
        client_ip="203.0.113.9",
        client_name=None,
        authenticated=False,
        config=config,
        org=org,
        directory=DIRECTORY,
    )
    return "250" if reply is None else str(reply)[:9]


@pytest.mark.parametrize(
    ("argument", "org", "expected"),
    [
        ("<alice@smtpadmin.test>", FILTERING, "250"),
        ("<nobody@smtpadmin.test>", FILTERING, "550 5.1.1"),
        ("<nobody@smtpadmin.test>", NOT_FILTERING, "250"),
        ("<ALICE@smtpadmin.test>", NOT_FILTERING, "250"),
        # Off lets unknown local addresses in, not relay.
        ("<victim@elsewhere.test>", NOT_FILTERING, "550 5.7.1"),
    ],
)
def test_the_directory_filter_switch(argument: str, org: OrganizationPolicy, expected: str) -> None:
    assert answer(argument, org=org) == expected


@pytest.mark.parametrize(
    ("argument", "config", "expected"),
    [
        ("<u@conn.test>", BACKUP_MX, "250"),
        ("<u@CONN.test>", BACKUP_MX, "250"),
        ("<u@a.sub.test>", BACKUP_MX, "250"),
        ("<u@sub.test>", BACKUP_MX, "550 5.7.1"),
        ("<u@xconn.test>", BACKUP_MX, "550 5.7.1"),
        ("<u@conn.test.evil.test>", BACKUP_MX, "550 5.7.1"),
        ("<victim%elsewhere.test@conn.test>", BACKUP_MX, "550 5.7.1"),
        ("<u@conn.test>", CLOSED, "550 5.7.1"),
    ],
)
def test_a_connectors_relay_box_opens_its_address_space_only(
    argument: str, config: ListenerConfig, expected: str
) -> None:
    assert answer(argument, config=config) == expected


def test_a_sender_every_connector_refuses_is_answered_with_the_connectors_reason() -> None:
    topology = Topology(
        connectors=(
            ConnectorFacts(
                id=1,
                name="Partner link",
                address_spaces=(AddressSpaceFacts("partner.test"),),
                restrictions=DeliveryRestrictions(
                    enforced=True, sender_exceptions=("*@outside.test",)
                ),
            ),
        ),
    )
    rcpt = read("<bob@partner.test>")
    assert isinstance(rcpt, ParsedAddress)
    reply = connector_refusal(rcpt, "eve@outside.test", topology)
    assert reply is not None and reply.code == 550
    assert reply.text.startswith("5.7.1 ") and "'Partner link'" in reply.text
    assert "*@outside.test" in reply.text and "\r" not in reply.text and "\n" not in reply.text
    assert connector_refusal(rcpt, "amy@elsewhere.test", topology) is None
    assert connector_refusal(rcpt, "", topology) is None  # NDRs are never refused
    assert connector_refusal(rcpt, "eve@outside.test", None) is None  # no snapshot yet
