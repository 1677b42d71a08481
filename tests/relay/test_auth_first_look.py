"""A login the relay has verified before costs one statement (``first_look``): the credential,
the virtual servers it serves and the throttle standing of the name and the address are read
together. The lockout still decides first: a remembered right password from a locked or
counted pair, for a name in back-off, a disabled credential or another virtual server goes
the long way (``check_credentials``) and gets the answer it always got."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from relay.smtp import auth
from relay.smtp.auth import INVALID, LOCKED, SUCCESS, FirstLook, check_credentials, first_look
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from smtpadmin import throttle
from smtpadmin.models import LoginThrottle
from tests.counting_hasher import HASHER, CountingHasher

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Passw0rd"
CLIENT = "203.0.113.9"
OTHER_CLIENT = "203.0.113.10"


@pytest.fixture(autouse=True)
def cached(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.PASSWORD_HASHERS = [HASHER]
    settings.SMTPADMIN_AUTH_CACHE_SECONDS = 300
    CountingHasher.reset()
    monkeypatch.setattr(auth, "CACHE", auth.VerifiedCache())
    monkeypatch.setattr(auth, "LAST_USED", auth.LastUsed())


@pytest.fixture
def vs() -> VirtualServer:
    node = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=node, name="one", port=2525)


def make_credential(username: str = "alice") -> SmtpCredential:
    credential = SmtpCredential(username=username)
    credential.set_password(PASSWORD)
    credential.full_clean()
    credential.save()
    return credential


def look(
    vs: VirtualServer, password: str = PASSWORD, ip: str = CLIENT, username: str = "alice"
) -> tuple[FirstLook, int]:
    with CaptureQueriesContext(connection) as captured:
        found = first_look(username, password, virtual_server_id=vs.pk, client_ip=ip)
    return found, len(captured.captured_queries)


def full(vs: VirtualServer, password: str = PASSWORD, ip: str = CLIENT) -> str:
    return check_credentials("alice", password, virtual_server_id=vs.pk, client_ip=ip).reply


def test_a_remembered_login_from_a_clean_pair_is_one_statement(vs: VirtualServer) -> None:
    make_credential()
    assert full(vs) == SUCCESS  # the first login hashes and is remembered
    look(vs)  # its last use was written at the first login: not again within the minute
    hashed = len(CountingHasher.checks)

    found, statements = look(vs)

    assert found.outcome is not None and found.outcome.reply == SUCCESS
    assert found.outcome.username == "alice"
    assert statements == 1
    assert len(CountingHasher.checks) == hashed


def test_a_first_login_is_left_to_the_full_check(vs: VirtualServer) -> None:
    make_credential()
    found, _ = look(vs)
    assert found == FirstLook(outcome=None, pause=0.0)
    assert CountingHasher.checks == []


def test_a_wrong_password_is_left_to_the_full_check_and_counted_there(vs: VirtualServer) -> None:
    make_credential()
    assert full(vs) == SUCCESS
    found, _ = look(vs, password="wrong")
    assert found.outcome is None
    assert full(vs, password="wrong") == INVALID


def test_a_locked_pair_is_refused_even_with_the_remembered_password(vs: VirtualServer) -> None:
    make_credential()
    assert full(vs) == SUCCESS
    for _ in range(throttle.MAX_FAILURES):
        assert full(vs, password="wrong") == INVALID

    found, _ = look(vs)
    assert found.outcome is None
    assert full(vs) == LOCKED
    # The same name from another address is not locked, and is remembered.
    other, _ = look(vs, ip=OTHER_CLIENT)
    assert other.outcome is not None and other.outcome.reply == SUCCESS


def test_a_pair_with_failures_goes_the_long_way_which_clears_them(vs: VirtualServer) -> None:
    make_credential()
    assert full(vs) == SUCCESS
    assert full(vs, password="wrong") == INVALID
    pair = LoginThrottle.objects.filter(client=CLIENT)
    assert pair.exists()

    found, _ = look(vs)
    assert found.outcome is None
    assert full(vs) == SUCCESS
    assert not pair.exists()


def test_a_name_in_back_off_waits_before_the_full_check(vs: VirtualServer) -> None:
    make_credential()
    assert full(vs) == SUCCESS
    LoginThrottle.objects.create(
        scope=throttle.Scope.SMTP,
        username="alice",
        client=throttle.ALL_ADDRESSES,
        failures=throttle.NAME_BACKOFF_AFTER + 1,
        first_failure_at=auth.timezone.now(),
    )
    found, _ = look(vs)
    assert found.outcome is None
    assert found.pause == throttle.backoff(throttle.NAME_BACKOFF_AFTER + 1) > 0


def test_a_disabled_credential_or_another_virtual_server_is_not_let_in(
    vs: VirtualServer,
) -> None:
    credential = make_credential()
    assert full(vs) == SUCCESS
    other = VirtualServer.objects.create(server=vs.server, name="two", port=2526)
    credential.virtual_servers.set([other])
    found, _ = look(vs)
    assert found.outcome is None
    assert full(vs) == INVALID

    credential.virtual_servers.set([])
    SmtpCredential.objects.filter(pk=credential.pk).update(enabled=False)
    found, _ = look(vs)
    assert found.outcome is None


def test_an_unknown_name_reads_its_back_off(vs: VirtualServer) -> None:
    found, _ = look(vs, username="ghost")
    assert found == FirstLook(outcome=None, pause=0.0)
