"""A credential's "last used" time after successful logins: written at the first, then at
most once a minute per relay process while nothing else about the name changed, so a client
that logs in on every connection does not cost three statements per message."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from relay.smtp import auth
from relay.smtp.auth import INVALID, LastUsed, check_credentials
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from tests.counting_hasher import HASHER

pytestmark = pytest.mark.django_db

PASSWORD = "Correct-Horse-7"
CLIENT = "192.0.2.5"


@pytest.fixture(autouse=True)
def fast_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [HASHER]
    settings.SMTPADMIN_AUTH_CACHE_SECONDS = 300


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(auth, "LAST_USED", LastUsed(clock=lambda: now[0]))
    return now


@pytest.fixture
def vs() -> VirtualServer:
    server = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=server, name="Inbound", port=2525)


@pytest.fixture
def credential() -> SmtpCredential:
    credential = SmtpCredential(username="alice")
    credential.set_password(PASSWORD)
    credential.full_clean()
    credential.save()
    return credential


def login(vs: VirtualServer, password: str = PASSWORD) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        outcome = check_credentials("alice", password, virtual_server_id=vs.pk, client_ip=CLIENT)
    writes = [
        q["sql"]
        for q in captured.captured_queries
        if "UPDATE" in q["sql"] and "smtpcredential" in q["sql"]
    ]
    return outcome.reply, writes


def test_the_first_login_writes_the_last_use_and_the_next_within_a_minute_do_not(
    vs: VirtualServer, credential: SmtpCredential, clock: list[float]
) -> None:
    reply, writes = login(vs)
    assert reply.startswith("235") and len(writes) == 1
    first = SmtpCredential.objects.get().last_used_at
    assert first is not None

    clock[0] += 59
    reply, writes = login(vs)
    assert reply.startswith("235") and writes == []
    assert SmtpCredential.objects.get().last_used_at == first

    clock[0] += 2
    reply, writes = login(vs)
    assert reply.startswith("235") and len(writes) == 1
    latest = SmtpCredential.objects.get().last_used_at
    assert latest is not None and latest > first


def test_a_login_after_failures_brings_the_counts_up_to_date_at_once(
    vs: VirtualServer, credential: SmtpCredential, clock: list[float]
) -> None:
    login(vs)
    assert login(vs, password="wrong")[0] == INVALID
    assert SmtpCredential.objects.get().failed_logins == 1

    reply, writes = login(vs)

    assert reply.startswith("235") and len(writes) == 1
    # The name's failures stay counted after a success (an attack on it is not reset).
    assert SmtpCredential.objects.get().failed_logins == 1
