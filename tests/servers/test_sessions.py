"""Current Sessions as data: what the relay worker reports every second becomes rows (inserted,
updated, deleted, never another server's), cheaply when nothing changed; Terminate and
Terminate All are audited requests the next report hands back to the worker."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from servers.models import (
    RoutingGroup,
    Server,
    SessionFacts,
    SmtpSession,
    VirtualServer,
    sync_live_sessions,
)
from smtpadmin.models import AuditEntry

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 11, 27, 9, 30, 0, 123456, tzinfo=datetime.UTC)


@pytest.fixture
def mx1() -> Server:
    return Server.objects.create(name="mx1", routing_group=RoutingGroup.first())


@pytest.fixture
def mx2() -> Server:
    return Server.objects.create(name="mx2", routing_group=RoutingGroup.first())


@pytest.fixture
def inbound(mx1: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=mx1, name="Inbound", port=2525)


@pytest.fixture
def submission(mx1: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=mx1, name="Submission", port=2587)


@pytest.fixture
def elsewhere(mx2: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=mx2, name="Inbound", port=2525)


def facts(virtual_server: VirtualServer, n: int = 1, **fields: Any) -> SessionFacts:
    values: dict[str, Any] = {
        "virtual_server_id": virtual_server.pk,
        "key": f"{virtual_server.server.name}/100/{n}",
        "client_address": f"192.0.2.{n % 250 + 1}",
        "client_port": 40000 + n,
        "connected_at": T0 + datetime.timedelta(seconds=n),
        "client_name": f"client{n}.example.net",
        "helo": f"client{n}.example.net",
    }
    return SessionFacts(**{**values, **fields})


def stored(server: Server) -> dict[str, SmtpSession]:
    return {s.key: s for s in SmtpSession.objects.filter(virtual_server__server=server)}


# --- sync_live_sessions ---------------------------------------------------------------------


def test_it_inserts_the_sessions_a_worker_reports(
    mx1: Server, inbound: VirtualServer, submission: VirtualServer
) -> None:
    report = [facts(inbound, 1), facts(submission, 2, auth_user="alice", tls=True, messages=3)]
    assert sync_live_sessions(mx1.pk, report) == set()
    rows = stored(mx1)
    assert set(rows) == {"mx1/100/1", "mx1/100/2"}
    second = rows["mx1/100/2"]
    assert second.virtual_server == submission
    assert (second.client_address, second.client_port) == ("192.0.2.3", 40002)
    assert (second.client_name, second.helo, second.auth_user) == (
        "client2.example.net",
        "client2.example.net",
        "alice",
    )
    assert second.tls and second.messages == 3
    assert second.connected_at == T0 + datetime.timedelta(seconds=2)
    assert second.terminate_requested_at is None


def test_it_updates_what_changed_since_the_last_report(mx1: Server, inbound: VirtualServer) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(inbound, 2)])
    later = facts(inbound, 1, helo="renamed.example.net", auth_user="bob", tls=True, messages=7)
    sync_live_sessions(mx1.pk, [later, facts(inbound, 2)])
    rows = stored(mx1)
    assert (rows["mx1/100/1"].helo, rows["mx1/100/1"].auth_user) == ("renamed.example.net", "bob")
    assert rows["mx1/100/1"].tls and rows["mx1/100/1"].messages == 7
    assert rows["mx1/100/2"].messages == 0


def test_it_deletes_the_sessions_that_ended(mx1: Server, inbound: VirtualServer) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(inbound, 2), facts(inbound, 3)])
    sync_live_sessions(mx1.pk, [facts(inbound, 2)])
    assert set(stored(mx1)) == {"mx1/100/2"}


def test_an_empty_report_clears_the_servers_sessions(
    mx1: Server, inbound: VirtualServer, submission: VirtualServer
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(submission, 2)])
    assert sync_live_sessions(mx1.pk, []) == set()
    assert not SmtpSession.objects.exists()


def test_it_never_touches_another_servers_sessions(
    mx1: Server, mx2: Server, inbound: VirtualServer, elsewhere: VirtualServer
) -> None:
    sync_live_sessions(mx2.pk, [facts(elsewhere, 1)])
    sync_live_sessions(mx1.pk, [facts(inbound, 1)])
    sync_live_sessions(mx1.pk, [])
    assert set(stored(mx2)) == {"mx2/100/1"}
    assert stored(mx1) == {}


def test_a_scoped_report_keeps_the_sessions_of_the_servers_other_processes(
    mx1: Server, inbound: VirtualServer
) -> None:
    first, second = "mx1/100/", "mx1/200/"
    sync_live_sessions(mx1.pk, [facts(inbound, 1, key=f"{first}1")], scope=first)
    sync_live_sessions(mx1.pk, [facts(inbound, 2, key=f"{second}1")], scope=second)
    assert set(stored(mx1)) == {"mx1/100/1", "mx1/200/1"}
    # The first process's session ended: only its row goes.
    sync_live_sessions(mx1.pk, [], scope=first)
    assert set(stored(mx1)) == {"mx1/200/1"}
    # A prefix is not a partial number: "mx1/20/" is not "mx1/200/".
    sync_live_sessions(mx1.pk, [], scope="mx1/20/")
    assert set(stored(mx1)) == {"mx1/200/1"}
    # Unscoped (one process, or the supervisor at its start), every session of the server.
    sync_live_sessions(mx1.pk, [])
    assert stored(mx1) == {}


def test_a_scoped_report_hands_back_only_its_own_terminations(
    mx1: Server, inbound: VirtualServer
) -> None:
    mine, theirs = facts(inbound, 1, key="mx1/100/1"), facts(inbound, 2, key="mx1/200/1")
    sync_live_sessions(mx1.pk, [mine], scope="mx1/100/")
    sync_live_sessions(mx1.pk, [theirs], scope="mx1/200/")
    SmtpSession.request_termination_all(inbound)
    assert sync_live_sessions(mx1.pk, [mine], scope="mx1/100/") == {"mx1/100/1"}
    assert sync_live_sessions(mx1.pk, [theirs], scope="mx1/200/") == {"mx1/200/1"}


def test_it_refuses_to_store_a_session_for_another_servers_virtual_server(
    mx1: Server, elsewhere: VirtualServer
) -> None:
    assert sync_live_sessions(mx1.pk, [facts(elsewhere, 5, key="mx1/100/5")]) == set()
    assert not SmtpSession.objects.exists()


def test_it_does_not_take_over_a_key_another_server_holds(
    mx1: Server, mx2: Server, inbound: VirtualServer, elsewhere: VirtualServer
) -> None:
    sync_live_sessions(mx2.pk, [facts(elsewhere, 1, key="same-key")])
    sync_live_sessions(mx1.pk, [facts(inbound, 1, key="same-key", helo="intruder")])
    only = SmtpSession.objects.get()
    assert only.virtual_server == elsewhere and only.helo != "intruder"


def test_a_report_for_a_virtual_server_deleted_meanwhile_is_ignored(
    mx1: Server, inbound: VirtualServer
) -> None:
    gone = VirtualServer.objects.create(server=mx1, name="Gone", port=2600)
    report = [facts(inbound, 1), facts(gone, 2)]
    gone.delete()
    sync_live_sessions(mx1.pk, report)
    assert set(stored(mx1)) == {"mx1/100/1"}


def test_deleting_a_virtual_server_deletes_its_sessions(
    mx1: Server, inbound: VirtualServer, submission: VirtualServer
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(submission, 2)])
    inbound.delete()
    assert set(stored(mx1)) == {"mx1/100/2"}


def test_text_a_client_sent_is_stored_even_when_the_database_could_not_take_it(
    mx1: Server, inbound: VirtualServer
) -> None:
    helo = "evil\x00host\ud800" + "x" * 500
    sync_live_sessions(mx1.pk, [facts(inbound, 1, helo=helo, client_name="n" * 300)])
    row = SmtpSession.objects.get()
    assert row.helo.startswith("evil\ufffdhost\ufffdxxx") and len(row.helo) == 255
    assert len(row.client_name) == 255
    # And the next report of the same session is "nothing changed".
    with CaptureQueriesContext(connection) as queries:
        sync_live_sessions(mx1.pk, [facts(inbound, 1, helo=helo, client_name="n" * 300)])
    assert len(queries) == 1


def test_it_returns_the_live_sessions_an_administrator_asked_to_end(
    mx1: Server, inbound: VirtualServer, administrator: User
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(inbound, 2)])
    SmtpSession.objects.get(key="mx1/100/1").request_termination(by=administrator)
    assert sync_live_sessions(mx1.pk, [facts(inbound, 1), facts(inbound, 2)]) == {"mx1/100/1"}
    # Still asked for while the session lasts (the worker may not have ended it yet)...
    assert sync_live_sessions(mx1.pk, [facts(inbound, 1, messages=1)]) == {"mx1/100/1"}
    row = SmtpSession.objects.get(key="mx1/100/1")
    assert row.messages == 1 and row.terminate_requested_by == administrator.username
    # ...and gone with it.
    assert sync_live_sessions(mx1.pk, []) == set()


# --- cost: it runs every second --------------------------------------------------------------


def report_of(virtual_server: VirtualServer, count: int, **fields: Any) -> list[SessionFacts]:
    return [facts(virtual_server, n, **fields) for n in range(1, count + 1)]


@pytest.mark.parametrize("count", [1, 50])
def test_an_unchanged_report_is_one_query_however_many_sessions(
    mx1: Server, inbound: VirtualServer, count: int
) -> None:
    report = report_of(inbound, count)
    sync_live_sessions(mx1.pk, report)
    with CaptureQueriesContext(connection) as queries:
        sync_live_sessions(mx1.pk, report)
    assert len(queries) == 1, [q["sql"] for q in queries]


def queries_for(server: Server, report: list[SessionFacts]) -> int:
    with CaptureQueriesContext(connection) as queries:
        sync_live_sessions(server.pk, report)
    return len(queries)


def test_inserting_updating_and_deleting_50_sessions_costs_what_5_do(
    mx1: Server, inbound: VirtualServer
) -> None:
    costs = []
    for count in (5, 50):
        SmtpSession.objects.all().delete()
        insert = queries_for(mx1, report_of(inbound, count))
        update = queries_for(mx1, report_of(inbound, count, messages=1))
        delete = queries_for(mx1, [])
        costs.append((insert, update, delete))
    assert costs[0] == costs[1]
    assert SmtpSession.objects.count() == 0


# --- Terminate and Terminate All --------------------------------------------------------------


def test_terminate_is_an_audited_action_on_the_virtual_server(
    mx1: Server, inbound: VirtualServer, administrator: User
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1, auth_user="alice")])
    session = SmtpSession.objects.get()
    assert session.request_termination(by=administrator) is True
    session.refresh_from_db()
    assert session.terminating and session.terminate_requested_by == "adam-admin"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username) == (AuditEntry.Action.ACTION, "adam-admin")
    assert (entry.object_type, entry.object_id) == ("Virtual Server", str(inbound.pk))
    assert entry.field == "session"
    assert entry.old_value == "192.0.2.2:40001 (client1.example.net) as alice"
    assert entry.new_value == "terminate"


def test_asking_twice_changes_nothing_the_second_time(
    mx1: Server, inbound: VirtualServer, administrator: User, full_admin: User
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1)])
    SmtpSession.objects.get().request_termination(by=administrator)
    stale = SmtpSession.objects.get()
    assert stale.request_termination(by=full_admin) is False
    assert SmtpSession.objects.get().terminate_requested_by == "adam-admin"
    assert AuditEntry.objects.count() == 1


def test_terminating_a_session_that_ended_meanwhile_does_nothing(
    mx1: Server, inbound: VirtualServer, administrator: User
) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1)])
    session = SmtpSession.objects.get()
    sync_live_sessions(mx1.pk, [])
    assert session.request_termination(by=administrator) is False
    assert not AuditEntry.objects.exists()


def test_terminate_all_asks_for_every_session_of_that_virtual_server_only(
    mx1: Server, inbound: VirtualServer, submission: VirtualServer, administrator: User
) -> None:
    sync_live_sessions(
        mx1.pk, [facts(inbound, 1), facts(inbound, 2), facts(inbound, 3), facts(submission, 4)]
    )
    SmtpSession.objects.get(key="mx1/100/1").request_termination(by=administrator)
    assert SmtpSession.request_termination_all(inbound, by=administrator) == 2
    report = [facts(inbound, 1), facts(inbound, 2), facts(inbound, 3), facts(submission, 4)]
    assert sync_live_sessions(mx1.pk, report) == {"mx1/100/1", "mx1/100/2", "mx1/100/3"}
    entry = AuditEntry.objects.filter(field="sessions").get()
    assert entry.object_id == str(inbound.pk) and entry.username == "adam-admin"
    assert entry.old_value == (
        "2 sessions: 192.0.2.3:40002 (client2.example.net), 192.0.2.4:40003 (client3.example.net)"
    )
    assert entry.new_value == "terminate all"


def test_terminate_all_without_sessions_is_not_audited(
    inbound: VirtualServer, administrator: User
) -> None:
    assert SmtpSession.request_termination_all(inbound, by=administrator) == 0
    assert not AuditEntry.objects.exists()


def test_the_reports_themselves_are_never_audited(mx1: Server, inbound: VirtualServer) -> None:
    sync_live_sessions(mx1.pk, [facts(inbound, 1)])
    sync_live_sessions(mx1.pk, [facts(inbound, 1, messages=2)])
    sync_live_sessions(mx1.pk, [])
    assert not AuditEntry.objects.exists()


def test_an_ipv6_client_reads_with_brackets(mx1: Server, inbound: VirtualServer) -> None:
    sync_live_sessions(
        mx1.pk, [replace(facts(inbound, 1), client_address="2001:db8::7", client_name="")]
    )
    assert str(SmtpSession.objects.get()) == "[2001:db8::7]:40001"
