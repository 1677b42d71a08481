"""AUTH lockout over real sockets, from several loopback client addresses: a locked (name,
address) pair answers 454 4.7.0, the same name from another address still gets in, and a name
under attack is slowed down before its password is checked, never refused."""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from smtpadmin import throttle
from tests.relay.harness import RelayThread
from tests.relay.world import PASSWORD, World

Relay = Callable[..., RelayThread]


def auth_from(source: str, port: int, password: str, username: str = "relayuser") -> int:
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="client.test", timeout=30, source_address=(source, 0)
    ) as client:
        client.ehlo()
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        return code


def test_a_locked_pair_answers_454_and_another_address_still_gets_in(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with ThreadPoolExecutor(throttle.MAX_FAILURES) as pool:
        guesses = [
            pool.submit(auth_from, "127.0.0.2", world.port, f"guess-{n}")
            for n in range(throttle.MAX_FAILURES)
        ]
        assert [g.result() for g in guesses] == [535] * throttle.MAX_FAILURES

    assert auth_from("127.0.0.2", world.port, PASSWORD) == 454
    assert auth_from("127.0.0.3", world.port, PASSWORD) == 235


def test_a_name_under_attack_waits_a_little_and_then_gets_in(world: World, relay: Relay) -> None:
    for n in range(throttle.NAME_BACKOFF_AFTER + 1):  # as if many addresses had guessed
        throttle.reserve(throttle.Scope.SMTP, "relayuser", f"198.51.100.{n}")
        throttle.failed(throttle.Scope.SMTP, "relayuser", f"198.51.100.{n}")
    relay(world.server)

    started = time.monotonic()
    code = auth_from("127.0.0.4", world.port, PASSWORD)
    waited = time.monotonic() - started

    assert code == 235
    assert 2.0 <= waited < throttle.NAME_BACKOFF_MAX + 2.0  # two failures beyond the ninth
