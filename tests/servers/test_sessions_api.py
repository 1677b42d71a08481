"""/api/v1/virtual-servers/{id}/sessions: every administrator reads the live sessions;
Administrators terminate one or all (audited, 202: the relay worker does it within seconds);
view-only administrators may not; unknown ids are 404, never 500."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

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

ApiAs = Callable[[User | None], APIClient]
T0 = datetime.datetime(2026, 11, 27, 9, 30, tzinfo=datetime.UTC)


@pytest.fixture
def server() -> Server:
    return Server.objects.create(name="mx1", routing_group=RoutingGroup.first())


@pytest.fixture
def inbound(server: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=server, name="Inbound", port=2525)


@pytest.fixture
def submission(server: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=server, name="Submission", port=2587)


@pytest.fixture
def sessions(server: Server, inbound: VirtualServer, submission: VirtualServer) -> None:
    report = [
        SessionFacts(
            virtual_server_id=inbound.pk,
            key="mx1/1/1",
            client_address="192.0.2.7",
            client_port=51234,
            connected_at=T0,
            client_name="client.example.net",
            helo="client.example.net",
            auth_user="alice",
            tls=True,
            messages=2,
        ),
        SessionFacts(
            virtual_server_id=inbound.pk,
            key="mx1/1/2",
            client_address="2001:db8::9",
            client_port=40000,
            connected_at=T0 + datetime.timedelta(minutes=1),
            helo="[2001:db8::9]",
        ),
        SessionFacts(
            virtual_server_id=submission.pk,
            key="mx1/1/3",
            client_address="198.51.100.1",
            client_port=40001,
            connected_at=T0,
        ),
    ]
    sync_live_sessions(server.pk, report)


def url(virtual_server: VirtualServer | int, rest: str = "") -> str:
    pk = virtual_server if isinstance(virtual_server, int) else virtual_server.pk
    return f"/api/v1/virtual-servers/{pk}/sessions/{rest}"


def session(key: str) -> SmtpSession:
    return SmtpSession.objects.get(key=key)


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("sessions")
def test_a_view_only_administrator_reads_the_sessions_of_one_virtual_server(
    api_as: ApiAs, view_only: User, inbound: VirtualServer
) -> None:
    response = api_as(view_only).get(url(inbound))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    first, second = body["results"]
    assert first == {
        "id": session("mx1/1/1").pk,
        "virtual_server": inbound.pk,
        "client_address": "192.0.2.7",
        "client_port": 51234,
        "client_name": "client.example.net",
        "helo": "client.example.net",
        "auth_user": "alice",
        "tls": True,
        "connected_at": "2026-11-27T09:30:00Z",
        "messages": 2,
        "terminate_requested_at": None,
        "terminate_requested_by": "",
    }
    assert second["client_address"] == "2001:db8::9" and second["auth_user"] == ""


@pytest.mark.usefixtures("sessions")
def test_one_session_can_be_read_alone_under_its_own_virtual_server_only(
    api_as: ApiAs, view_only: User, inbound: VirtualServer, submission: VirtualServer
) -> None:
    pk = session("mx1/1/1").pk
    assert api_as(view_only).get(url(inbound, f"{pk}/")).json()["helo"] == "client.example.net"
    assert api_as(view_only).get(url(submission, f"{pk}/")).status_code == 404


@pytest.mark.usefixtures("sessions")
def test_the_list_searches_and_orders(
    api_as: ApiAs, view_only: User, inbound: VirtualServer
) -> None:
    client = api_as(view_only)
    found = client.get(url(inbound), {"search": "alice"}).json()["results"]
    assert [s["client_address"] for s in found] == ["192.0.2.7"]
    ordered = client.get(url(inbound), {"ordering": "-connected_at"}).json()["results"]
    assert [s["client_address"] for s in ordered] == ["2001:db8::9", "192.0.2.7"]


def test_a_virtual_server_without_sessions_has_an_empty_list(
    api_as: ApiAs, view_only: User, inbound: VirtualServer
) -> None:
    assert api_as(view_only).get(url(inbound)).json()["results"] == []


@pytest.mark.parametrize("pk", ["999999", "abc", "99999999999999999999", "-1"])
def test_an_unknown_virtual_server_is_a_404(
    api_as: ApiAs, administrator: User, inbound: VirtualServer, pk: str
) -> None:
    client = api_as(administrator)
    assert client.get(f"/api/v1/virtual-servers/{pk}/sessions/").status_code == 404
    response = client.post(f"/api/v1/virtual-servers/{pk}/sessions/terminate-all/")
    assert response.status_code == 404
    assert client.post(f"/api/v1/virtual-servers/{pk}/sessions/1/terminate/").status_code == 404


@pytest.mark.parametrize("role", ["outsider", None])
@pytest.mark.usefixtures("sessions")
def test_outsiders_and_anonymous_callers_see_nothing(
    request: pytest.FixtureRequest, api_as: ApiAs, inbound: VirtualServer, role: str | None
) -> None:
    user = request.getfixturevalue(role) if role else None
    response = api_as(user).get(url(inbound))
    assert response.status_code == (403 if role else 401)
    assert "192.0.2.7" not in response.content.decode()


# --- Terminate --------------------------------------------------------------------------------


@pytest.mark.usefixtures("sessions")
def test_an_administrator_terminates_a_session_and_it_is_audited(
    api_as: ApiAs, administrator: User, server: Server, inbound: VirtualServer
) -> None:
    pk = session("mx1/1/1").pk
    response = api_as(administrator).post(url(inbound, f"{pk}/terminate/"))
    assert response.status_code == 202
    body = response.json()
    assert body["id"] == pk and body["terminate_requested_at"] is not None
    assert body["terminate_requested_by"] == "adam-admin"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.ACTION)
    assert (entry.username, entry.object_id) == ("adam-admin", str(inbound.pk))
    assert "192.0.2.7:51234" in entry.old_value
    # The relay worker learns it at its next report.
    live = [
        SessionFacts(
            virtual_server_id=inbound.pk,
            key="mx1/1/1",
            client_address="192.0.2.7",
            client_port=51234,
            connected_at=T0,
        )
    ]
    assert sync_live_sessions(server.pk, live) == {"mx1/1/1"}


@pytest.mark.usefixtures("sessions")
def test_terminating_twice_answers_the_same_and_audits_once(
    api_as: ApiAs, full_admin: User, inbound: VirtualServer
) -> None:
    pk = session("mx1/1/1").pk
    client = api_as(full_admin)
    first = client.post(url(inbound, f"{pk}/terminate/"))
    second = client.post(url(inbound, f"{pk}/terminate/"))
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.ACTION).count() == 1


@pytest.mark.usefixtures("sessions")
def test_a_view_only_administrator_may_not_terminate(
    api_as: ApiAs, view_only: User, inbound: VirtualServer
) -> None:
    client = api_as(view_only)
    pk = session("mx1/1/1").pk
    assert client.post(url(inbound, f"{pk}/terminate/")).status_code == 403
    assert client.post(url(inbound, "terminate-all/")).status_code == 403
    assert not SmtpSession.objects.filter(terminate_requested_at__isnull=False).exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.usefixtures("sessions")
def test_a_session_of_another_virtual_server_or_an_unknown_one_is_a_404(
    api_as: ApiAs, administrator: User, submission: VirtualServer
) -> None:
    client = api_as(administrator)
    pk = session("mx1/1/1").pk  # belongs to Inbound
    assert client.post(url(submission, f"{pk}/terminate/")).status_code == 404
    assert client.post(url(submission, "999999/terminate/")).status_code == 404
    assert client.post(url(submission, "abc/terminate/")).status_code == 404
    assert session("mx1/1/1").terminate_requested_at is None


@pytest.mark.usefixtures("sessions")
def test_terminate_is_a_post(api_as: ApiAs, administrator: User, inbound: VirtualServer) -> None:
    pk = session("mx1/1/1").pk
    assert api_as(administrator).get(url(inbound, f"{pk}/terminate/")).status_code == 405
    assert api_as(administrator).get(url(inbound, "terminate-all/")).status_code == 405


# --- Terminate All ----------------------------------------------------------------------------


@pytest.mark.usefixtures("sessions")
def test_terminate_all_answers_202_with_what_was_requested(
    api_as: ApiAs, administrator: User, inbound: VirtualServer, submission: VirtualServer
) -> None:
    response = api_as(administrator).post(url(inbound, "terminate-all/"))
    assert response.status_code == 202
    assert response.json() == {"virtual_server": inbound.pk, "requested": 2}
    ending = SmtpSession.objects.filter(terminate_requested_at__isnull=False)
    assert {s.key for s in ending} == {"mx1/1/1", "mx1/1/2"}
    # Again: nothing more to ask for.
    again = api_as(administrator).post(url(inbound, "terminate-all/"))
    assert again.json() == {"virtual_server": inbound.pk, "requested": 0}
    assert session("mx1/1/3").terminate_requested_at is None  # Submission's


# --- the paths as the issue spells them (no trailing slash) ---------------------------------


@pytest.mark.usefixtures("sessions")
def test_the_paths_work_without_a_trailing_slash_too(
    api_as: ApiAs, administrator: User, inbound: VirtualServer
) -> None:
    client = api_as(administrator)
    base = f"/api/v1/virtual-servers/{inbound.pk}/sessions"
    assert client.get(base).json()["count"] == 2
    pk = session("mx1/1/1").pk
    assert client.post(f"{base}/{pk}/terminate").status_code == 202
    response: Any = client.post(f"{base}/terminate-all")
    assert (response.status_code, response.json()["requested"]) == (202, 1)
    assert client.get("/api/v1/virtual-servers/abc/sessions").status_code == 404


def test_the_schema_documents_each_sessions_endpoint_once() -> None:
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    base = "/api/v1/virtual-servers/{virtual_server_id}/sessions"
    paths = schema["paths"]
    assert set(paths[f"{base}/"]) == {"get"}
    assert set(paths[f"{base}/{{id}}/"]) == {"get"}
    assert set(paths[f"{base}/{{id}}/terminate/"]) == {"post"}
    assert set(paths[f"{base}/terminate-all/"]) == {"post"}
    assert not [p for p in paths if "sessions" in p and not p.endswith("/")]
    responses = paths[f"{base}/terminate-all/"]["post"]["responses"]
    assert {code for code in responses if code.startswith("2")} == {"202"}
