"""Parallel guessing over real sockets: however many AUTH attempts arrive at once, no more than
the lockout's limit of passwords is ever checked for one (user name, client address) pair."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from servers.models import SmtpCredential
from smtpadmin import throttle
from tests.counting_hasher import HASHER, CountingHasher
from tests.relay.harness import RelayThread, smtp
from tests.relay.world import PASSWORD, World, make_world

Relay = Callable[..., RelayThread]
PARALLEL = 40


@pytest.fixture
def counted_world(transactional_db: Any, tmp_path: Path, settings: Any) -> World:
    """The relay world, its credential hashed by the counting hasher."""
    settings.PASSWORD_HASHERS = [HASHER]
    world = make_world(tmp_path)
    world.credential.set_password(PASSWORD)
    world.credential.save()
    # All the guesses come from 127.0.0.1 at once: no per-client connection limit in the way.
    world.configure(connection_limit_per_client=None)
    CountingHasher.reset()
    return world


def auth_plain(port: int, username: str, password: str) -> int:
    with smtp(port, timeout=60) as client:
        client.ehlo()
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        return code


def guess_in_parallel(port: int, username: str) -> list[int]:
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(auth_plain, port, username, f"guess-{n}") for n in range(PARALLEL)]
        return [future.result() for future in futures]


def test_parallel_wrong_passwords_check_no_more_than_the_limit(
    counted_world: World, relay: Relay
) -> None:
    relay(counted_world.server)
    stored = SmtpCredential.objects.get(pk=counted_world.credential.pk).password_hash

    codes = guess_in_parallel(counted_world.port, "relayuser")

    checked = CountingHasher.checks.count(stored)
    assert 1 <= checked <= throttle.MAX_FAILURES
    assert sorted(set(codes)) == [454, 535]
    assert codes.count(535) == checked
    with smtp(counted_world.port) as client:  # still locked for this pair afterwards
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("relayuser", PASSWORD)
    assert refused.value.smtp_code == 454


def test_parallel_guesses_of_an_unknown_name_are_limited_alike(
    counted_world: World, relay: Relay
) -> None:
    relay(counted_world.server)

    codes = guess_in_parallel(counted_world.port, "nobody")

    assert 1 <= len(CountingHasher.checks) <= throttle.MAX_FAILURES
    assert codes.count(535) == len(CountingHasher.checks)
    assert codes.count(454) == PARALLEL - codes.count(535)
