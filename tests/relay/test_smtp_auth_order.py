"""When AUTH is offered and allowed: only over TLS where the virtual server requires TLS or
basic authentication requires it, and never inside a mail transaction (RFC 4954 section 4)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from tests.relay.harness import RelayThread, smtp
from tests.relay.wire import Wire
from tests.relay.world import PASSWORD, World, certificate, client_tls

Relay = Callable[..., RelayThread]

PLAIN = b"AUTH PLAIN " + base64.b64encode(f"\0relayuser\0{PASSWORD}".encode())


def test_it_advertises_auth_only_after_starttls_when_tls_is_required(
    world: World, relay: Relay
) -> None:
    world.configure(certificate=certificate(), require_tls=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.starttls(context=client_tls())
        client.ehlo()
        assert client.has_extn("auth")
        client.login("relayuser", PASSWORD)


def test_it_refuses_auth_before_starttls_when_tls_is_required(world: World, relay: Relay) -> None:
    world.configure(certificate=certificate(), require_tls=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        code, reply = client.docmd(PLAIN.decode())
    assert (code, reply[:5]) == (530, b"5.7.0")


def test_it_advertises_auth_without_tls_when_nothing_requires_it(
    world: World, relay: Relay
) -> None:
    world.configure(certificate=certificate())
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        assert client.has_extn("auth")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}


def test_it_refuses_auth_inside_a_mail_transaction(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"MAIL FROM:<a@outside.test>").startswith(b"250")
        assert wire.command(PLAIN).startswith(b"503 5.5.1")
        assert wire.command(b"AUTH LOGIN").startswith(b"503 5.5.1")
        # The transaction is not disturbed; after it, AUTH works.
        assert wire.command(b"RCPT TO:<alice@smtpadmin.test>").startswith(b"250")
        assert wire.command(b"RSET").startswith(b"250")
        assert wire.command(PLAIN).startswith(b"235")


def test_the_refused_auth_inside_a_transaction_does_not_log_in(world: World, relay: Relay) -> None:
    world.configure(relay_allow_authenticated=True)
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo()
        client.mail("a@outside.test")
        assert client.docmd(PLAIN.decode())[0] == 503
        code, _ = client.rcpt("victim@elsewhere.test")
    assert code == 550
