"""The AUTH cache: a successful password check is remembered for a while, so the next AUTH of
the same name and password does not hash again; it never outlives the credential as it was
(password, enabled, existence), never remembers a failure, and never gets past the lockout."""

from __future__ import annotations

import base64
import smtplib
import threading
import time
from typing import Any

import pytest
from django.db import connection

from relay.smtp import auth
from relay.smtp.auth import INVALID, LOCKED, AuthOutcome, VerifiedCache, check_credentials
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from tests.counting_hasher import HASHER, CountingHasher
from tests.relay.harness import RelayThread
from tests.relay.world import PASSWORD as WORLD_PASSWORD
from tests.relay.world import World
from tests.threads import TestThread

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Passw0rd"
CLIENT = "203.0.113.9"
SESSIONS = 6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def counting_hasher(settings: Any) -> type[CountingHasher]:
    settings.PASSWORD_HASHERS = [HASHER]
    settings.SMTPADMIN_AUTH_CACHE_SECONDS = 300
    CountingHasher.reset()
    return CountingHasher


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth.CACHE, "clock", clock)
    return clock


@pytest.fixture
def vs() -> VirtualServer:
    node = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=node, name="one", port=2525)


def make_credential(username: str = "alice", **fields: Any) -> SmtpCredential:
    credential = SmtpCredential(username=username, **fields)
    credential.set_password(PASSWORD)
    credential.full_clean()
    credential.save()
    return credential


def login(
    vs: VirtualServer, username: str = "alice", password: str = PASSWORD, ip: str = CLIENT
) -> AuthOutcome:
    return check_credentials(username, password, virtual_server_id=vs.pk, client_ip=ip)


def hashed() -> int:
    return len(CountingHasher.checks)


def test_a_second_login_does_not_hash_the_password_again(vs: VirtualServer) -> None:
    make_credential()

    assert login(vs).ok
    assert hashed() == 1
    assert login(vs).ok
    assert login(vs, ip="198.51.100.7").ok
    assert hashed() == 1


def test_with_the_cache_off_every_login_hashes(vs: VirtualServer, settings: Any) -> None:
    settings.SMTPADMIN_AUTH_CACHE_SECONDS = 0
    make_credential()

    assert login(vs).ok and login(vs).ok
    assert hashed() == 2
    assert len(auth.CACHE) == 0


def test_failures_are_never_remembered(vs: VirtualServer) -> None:
    make_credential()

    assert login(vs, password="wrong").reply == INVALID
    assert login(vs, password="wrong").reply == INVALID
    assert login(vs, "nobody").reply == INVALID
    assert login(vs, "nobody").reply == INVALID
    assert hashed() == 4
    assert len(auth.CACHE) == 0


def test_a_wrong_password_after_a_remembered_one_is_hashed_refused_and_counted(
    vs: VirtualServer,
) -> None:
    credential = make_credential()
    assert login(vs).ok

    assert login(vs, password="wrong").reply == INVALID
    assert hashed() == 2
    credential.refresh_from_db()
    assert credential.failed_logins == 1


def test_a_password_change_ends_it_at_once(vs: VirtualServer) -> None:
    credential = make_credential()
    assert login(vs).ok

    credential.set_password("another-Passw0rd")
    credential.save()

    assert login(vs).reply == INVALID
    assert login(vs, password="another-Passw0rd").ok
    assert hashed() == 3


def test_disabling_the_credential_ends_it_at_once(vs: VirtualServer) -> None:
    make_credential()
    assert login(vs).ok

    SmtpCredential.objects.filter(username="alice").update(enabled=False)
    assert login(vs).reply == INVALID

    SmtpCredential.objects.filter(username="alice").update(enabled=True)
    assert login(vs).ok
    assert hashed() == 3  # enabled again, the password is checked again


def test_deleting_the_credential_ends_it_at_once(vs: VirtualServer) -> None:
    make_credential()
    assert login(vs).ok

    SmtpCredential.objects.filter(username="alice").delete()
    assert login(vs).reply == INVALID
    assert len(auth.CACHE) == 0

    make_credential()  # the same name and password again: a new credential, checked anew
    assert login(vs).ok
    assert hashed() == 3


def test_it_expires(vs: VirtualServer, clock: Clock) -> None:
    make_credential()
    assert login(vs).ok

    clock.now += 299
    assert login(vs).ok
    assert hashed() == 1
    clock.now += 2  # 301 seconds after the check that was remembered
    assert login(vs).ok
    assert hashed() == 2


def test_a_locked_pair_stays_refused_with_a_remembered_password(vs: VirtualServer) -> None:
    make_credential()
    assert login(vs).ok
    for _ in range(5):
        assert login(vs, password="wrong").reply == INVALID
    checks = hashed()

    assert login(vs).reply == LOCKED
    assert hashed() == checks
    assert login(vs, ip="198.51.100.7").ok  # another address: remembered, not hashed
    assert hashed() == checks


def test_the_virtual_servers_of_the_credential_still_apply(vs: VirtualServer) -> None:
    credential = make_credential()
    assert login(vs).ok
    other = VirtualServer.objects.create(server=vs.server, name="two", port=2526)

    credential.virtual_servers.set([other])
    assert login(vs).reply == INVALID
    credential.virtual_servers.set([])
    assert login(vs).ok


@pytest.mark.django_db(transaction=True)
def test_sessions_logging_in_together_hash_the_password_once(
    vs: VirtualServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_credential()
    verify = CountingHasher.verify

    def slow_verify(self: CountingHasher, password: str, encoded: str) -> bool:
        time.sleep(0.2)  # as long as a real hash takes: the sessions overlap
        return verify(self, password, encoded)

    monkeypatch.setattr(CountingHasher, "verify", slow_verify)
    start = threading.Barrier(SESSIONS)
    outcomes: list[AuthOutcome] = []

    def log_in(ip: str) -> None:
        start.wait(5)
        outcomes.append(login(vs, ip=ip))
        connection.close()

    # Each from its own address, as separate hosts (one address may hold few checks at once).
    threads = [TestThread(log_in, f"198.51.100.{n}") for n in range(1, SESSIONS + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.finish(30)

    assert [outcome.reply for outcome in outcomes] == [auth.SUCCESS] * SESSIONS
    assert hashed() == 1


def test_it_keeps_no_password_and_its_key_is_the_process_own() -> None:
    first, second = VerifiedCache(), VerifiedCache()

    assert first._digest("alice", PASSWORD) != second._digest("alice", PASSWORD)
    assert PASSWORD.encode() not in first._digest("alice", PASSWORD)
    # The name's length is part of what is hashed: the split cannot be shifted.
    assert first._digest("ab", "c") != first._digest("a", "bc")


def test_it_holds_a_bounded_number_of_entries(
    vs: VirtualServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VerifiedCache, "MAX_ENTRIES", 3)
    credential = make_credential()
    cache = VerifiedCache()
    for n in range(10):
        cache.remember(f"name{n}", PASSWORD, credential, 300)

    assert len(cache) == 3
    assert cache.verified("name9", PASSWORD, credential)
    assert not cache.verified("name0", PASSWORD, credential)


def test_over_smtp_the_second_session_is_not_hashed(world: World, relay: type[RelayThread]) -> None:
    relay(world.server)
    token = base64.b64encode(f"\0relayuser\0{WORLD_PASSWORD}".encode()).decode()
    for _ in range(3):
        with smtplib.SMTP("127.0.0.1", world.port, timeout=30) as client:
            client.ehlo()
            assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235
    assert hashed() == 1
