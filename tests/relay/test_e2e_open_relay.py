"""The open-relay matrix, over real sockets: address tricks from an anonymous outside client,
and client situations (relay list, authentication, modes). Nothing may reach a domain this
organization does not receive mail for unless the administrator allowed that client."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from relay.models import Message
from servers.models import SmtpCredential, VirtualServer
from tests.relay.harness import RelayThread, free_port, smtp
from tests.relay.world import PASSWORD, World

Relay = Callable[..., RelayThread]

# RCPT TO arguments that must never be accepted from an anonymous client outside the relay list.
TRICKS = [
    "<victim@elsewhere.test>",
    "victim@elsewhere.test",
    "<VICTIM@ELSEWHERE.TEST>",
    "<victim@ElseWhere.Test>",
    "<victim@elsewhere.test.>",
    "<victim@elsewhere.test..>",
    "< victim@elsewhere.test >",
    "<@smtpadmin.test:victim@elsewhere.test>",
    "<@smtpadmin.test,@mx.relay.test:victim@elsewhere.test>",
    "<smtpadmin.test:victim@elsewhere.test>",
    "<victim%elsewhere.test@smtpadmin.test>",
    "<victim%elsewhere.test@partner.test>",
    "<elsewhere.test!victim@smtpadmin.test>",
    "<elsewhere.test!victim@partner.test>",
    '<"victim@elsewhere.test"@smtpadmin.test>',
    '<"victim@elsewhere.test"@partner.test>',
    '<"victim@elsewhere.test">',
    '<"victim"@elsewhere.test>',
    "<victim@elsewhere.test@smtpadmin.test>",
    "<victim@smtpadmin.test@elsewhere.test>",
    "<victim@[192.0.2.1]>",
    "<victim@[127.0.0.1]>",
    "<victim@[IPv6:2001:db8::1]>",
    "<victim@smtpadmin.test.elsewhere.test>",
    "<victim@sub.smtpadmin.test>",
    "<victim@.smtpadmin.test>",
    "<victim@xn--bcher-kva.test>",
    "<victim@bücher.test>",
    "<victim@localhost>",
    "<victim@mx.relay.test>",
    "<postmaster@elsewhere.test>",
    "<victim@elsewhere.test> NOTIFY=NEVER",
    "<alice@smtpadmin.test,victim@elsewhere.test>",
    "<victim@elsewhere.test%smtpadmin.test>",
]


@pytest.mark.parametrize("trick", TRICKS)
def test_no_address_trick_relays_for_an_anonymous_client(
    world: World, relay: Relay, trick: str
) -> None:
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.mail("someone@outside.test", ["SMTPUTF8"] if "ü" in trick else [])[0] == 250
        code, reply = client.docmd("RCPT TO:" + trick)
        assert code >= 500, (code, reply)
        # And the message cannot go anywhere.
        assert client.docmd("DATA")[0] == 503
    assert not Message.objects.exists()


SITUATIONS: dict[str, tuple[dict[str, Any], str, bool]] = {
    # name: (virtual server settings, how the client presents itself, relay allowed?)
    "anonymous, empty relay list": ({}, "anonymous", False),
    "listed by its IP": ({"relay_list": ["127.0.0.1"]}, "anonymous", True),
    "listed by its subnet": ({"relay_list": ["127.0.0.0/8"]}, "anonymous", True),
    "another subnet listed": ({"relay_list": ["10.0.0.0/8"]}, "anonymous", False),
    "listed by a domain it has no reverse DNS for": (
        {"relay_list": ["trusted.test"]},
        "anonymous",
        False,
    ),
    "authenticated, allowed to relay": ({}, "authenticated", True),
    "authenticated, box off": ({"relay_allow_authenticated": False}, "authenticated", False),
    "failed authentication": ({}, "wrong password", False),
    "credential disabled": ({}, "disabled credential", False),
    "credential for another virtual server": ({}, "credential elsewhere", False),
    "all except the list, client listed": (
        {"relay_mode": "all_except_listed", "relay_list": ["127.0.0.1"]},
        "anonymous",
        False,
    ),
    "all except the list, client not listed": (
        {"relay_mode": "all_except_listed", "relay_list": ["10.0.0.1"]},
        "anonymous",
        True,
    ),
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_relay_follows_the_client_situation(world: World, relay: Relay, situation: str) -> None:
    settings, presents, allowed = SITUATIONS[situation]
    if settings:
        world.configure(**settings)
    credential = world.credential
    if presents == "disabled credential":
        SmtpCredential.objects.filter(pk=credential.pk).update(enabled=False)
    if presents == "credential elsewhere":
        elsewhere = VirtualServer.objects.create(
            server=world.server, name="Elsewhere", ip_address="127.0.0.1", port=free_port()
        )
        credential.virtual_servers.set([elsewhere])
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        if presents != "anonymous":
            password = "wrong" if presents == "wrong password" else PASSWORD
            token = base64.b64encode(f"\0relayuser\0{password}".encode()).decode()
            code, _ = client.docmd("AUTH", f"PLAIN {token}")
            assert code == (235 if presents == "authenticated" else 535)
        client.mail("app@smtpadmin.test")
        code, reply = client.rcpt("friend@elsewhere.test")
    if allowed:
        assert code == 250, reply
    else:
        assert (code, reply[:5]) == (550, b"5.7.1"), reply
