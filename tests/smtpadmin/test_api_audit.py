"""Every change through the API leaves audit entries (who, when, object, field, old -> new),
and /api/v1/audit-log/ finds them again by user, object, time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from servers.models import RoutingGroup
from smtpadmin.models import AuditEntry
from tests.smtpadmin.test_api_permissions import (
    API,
    connector_payload,
    make_connector,
    make_server,
    make_user,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(administrator: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(administrator)
    return client


def _changes(**filters: Any) -> dict[str, tuple[str, str]]:
    return {
        e.field: (e.old_value, e.new_value)
        for e in AuditEntry.objects.filter(**filters).exclude(field="")
    }


def test_creating_writes_who_what_and_each_value_set(api: APIClient, administrator: User) -> None:
    created = api.post(
        f"{API}servers/",
        {"name": "mars", "fqdn": "Mars.Example.com", "routing_group": RoutingGroup.first().pk},
    )
    assert created.status_code == 201, created.json()
    pk = str(created.json()["id"])
    head = AuditEntry.objects.get(object_id=pk, action="create", field="")
    assert head.user == administrator
    assert head.username == "adam-admin"
    assert head.object_type == "Server"
    assert head.object_repr == "mars"
    assert abs(head.at - timezone.now()) < timedelta(minutes=1)
    changes = _changes(object_id=pk, action="create", object_type="Server")
    assert changes["name"] == ("", "mars")
    assert changes["fqdn"] == ("", "mars.example.com")  # the stored (normalised) value


def test_updating_writes_one_entry_per_changed_field_with_old_and_new(api: APIClient) -> None:
    vs = make_virtual_server()
    response = api.patch(
        f"{API}virtual-servers/{vs.pk}/",
        {"port": 2600, "name": vs.name, "relay_list": ["192.0.2.0/24"], "logging_enabled": True},
    )
    assert response.status_code == 200, response.json()
    assert _changes(object_id=str(vs.pk), action="update") == {
        "port": ("2525", "2600"),
        "relay_list": ("", "192.0.2.0/24"),
        "logging_enabled": ("no", "yes"),
    }
    entry = AuditEntry.objects.get(object_id=str(vs.pk), field="port")
    assert entry.object_type == "Virtual Server"
    assert entry.username == "adam-admin"


def test_a_patch_that_changes_nothing_writes_nothing(api: APIClient) -> None:
    vs = make_virtual_server()
    assert api.patch(f"{API}virtual-servers/{vs.pk}/", {"port": vs.port}).status_code == 200
    assert not AuditEntry.objects.exists()


def test_changing_address_spaces_and_bridgeheads_is_audited(api: APIClient) -> None:
    connector = make_connector(spaces=(("*", 1),))
    old_bridgehead = connector.bridgeheads.get()
    other = make_virtual_server(make_server("venus"))
    response = api.patch(
        f"{API}connectors/{connector.pk}/",
        {"address_spaces": [{"domain": "example.net", "cost": 5}], "bridgeheads": [other.pk]},
    )
    assert response.status_code == 200, response.json()
    assert _changes(object_id=str(connector.pk), action="update") == {
        "address_spaces": ("* (1)", "example.net (5)"),
        "bridgeheads": (str(old_bridgehead.pk), str(other.pk)),
    }


def test_a_new_connector_records_its_address_spaces(api: APIClient) -> None:
    created = api.post(f"{API}connectors/", connector_payload(), format="json")
    assert created.status_code == 201
    changes = _changes(object_id=str(created.json()["id"]), action="create")
    assert changes["address_spaces"] == ("", "partner.example (1)")
    assert changes["smart_hosts"] == ("", "relay.example.net")


def test_deleting_writes_one_entry(api: APIClient, administrator: User) -> None:
    server = make_server("venus")
    assert api.delete(f"{API}servers/{server.pk}/").status_code == 204
    entry = AuditEntry.objects.get(action="delete")
    assert (entry.object_type, entry.object_id, entry.object_repr) == (
        "Server",
        str(server.pk),
        "venus",
    )
    assert entry.user == administrator


def test_refused_changes_write_nothing(api: APIClient) -> None:
    vs = make_virtual_server()
    assert api.patch(f"{API}virtual-servers/{vs.pk}/", {"port": 0}).status_code == 400
    assert api.delete(f"{API}servers/{vs.server_id}/").status_code == 409
    assert api.post(f"{API}routing-groups/", {"name": ""}).status_code == 400
    assert not AuditEntry.objects.exists()


def test_an_action_writes_an_entry(api: APIClient) -> None:
    vs = make_virtual_server()
    api.post(f"{API}virtual-servers/{vs.pk}/pause/")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.field, entry.old_value, entry.new_value) == (
        "action",
        "desired_state",
        "running",
        "paused",
    )
    assert entry.username == "adam-admin"


def test_organization_changes_are_audited(api: APIClient) -> None:
    api.patch(f"{API}organization/", {"recipients_limit": 100}, format="json")
    entry = AuditEntry.objects.get()
    assert (entry.object_type, entry.field, entry.old_value, entry.new_value) == (
        "Organization",
        "recipients_limit",
        "5000",
        "100",
    )


def test_role_changes_are_audited(full_admin: User) -> None:
    client = APIClient()
    client.force_authenticate(full_admin)
    user = make_user("ursula")
    response = client.patch(f"{API}users/{user.pk}/", {"role": "administrator"})
    assert response.status_code == 200
    assert _changes(object_type="User", object_id=str(user.pk)) == {
        "role": ("View Only Administrator", "Administrator")
    }


# --- reading the log -------------------------------------------------------------------------


@pytest.fixture
def history(administrator: User, full_admin: User) -> dict[str, AuditEntry]:
    now = timezone.now()

    def entry(by: User, days_ago: int, **fields: Any) -> AuditEntry:
        row = AuditEntry.objects.create(user=by, username=by.username, action="update", **fields)
        AuditEntry.objects.filter(pk=row.pk).update(at=now - timedelta(days=days_ago))
        return row

    return {
        "old": entry(administrator, 10, object_type="Server", object_id="1", field="name"),
        "mid": entry(full_admin, 5, object_type="Virtual Server", object_id="2", field="port"),
        "new": entry(administrator, 1, object_type="Connector", object_id="3", field="cost"),
    }


def _ids(client: APIClient, **query: str) -> list[int]:
    response = client.get(f"{API}audit-log/", query)
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_the_log_lists_newest_first_with_the_contract_fields(
    view_only: User, history: dict[str, AuditEntry]
) -> None:
    client = APIClient()
    client.force_authenticate(view_only)
    answer = client.get(f"{API}audit-log/").json()
    assert [row["id"] for row in answer["results"]] == [
        history[k].pk for k in ("new", "mid", "old")
    ]
    row = answer["results"][0]
    assert {
        "at",
        "username",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "field",
        "old_value",
        "new_value",
    } <= set(row)
    assert client.get(f"{API}audit-log/{history['old'].pk}/").json()["field"] == "name"


def test_the_log_filters_by_user_object_and_time(
    view_only: User, history: dict[str, AuditEntry]
) -> None:
    client = APIClient()
    client.force_authenticate(view_only)
    old, mid, new = history["old"].pk, history["mid"].pk, history["new"].pk
    assert _ids(client, username="adam-admin") == [new, old]
    assert _ids(client, object_type="virtual server") == [mid]
    assert _ids(client, object_type="Server", object_id="1") == [old]
    assert _ids(client, object_id="3") == [new]
    assert _ids(client, field="port") == [mid]
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    two_days_ago = (timezone.now() - timedelta(days=2)).isoformat()
    assert _ids(client, since=week_ago) == [new, mid]
    assert _ids(client, until=week_ago) == [old]
    assert _ids(client, since=week_ago, until=two_days_ago) == [mid]
    assert _ids(client, ordering="at") == [old, mid, new]
    assert _ids(client, username="nobody") == []


def test_a_bad_time_filter_is_a_400(view_only: User) -> None:
    client = APIClient()
    client.force_authenticate(view_only)
    response = client.get(f"{API}audit-log/", {"since": "last tuesday"})
    assert response.status_code == 400
    assert "since" in response.json()


def test_the_log_cannot_be_written_or_erased(full_admin: User, history: Any) -> None:
    client = APIClient()
    client.force_authenticate(full_admin)
    pk = history["old"].pk
    assert client.post(f"{API}audit-log/", {"field": "x"}).status_code == 405
    assert client.patch(f"{API}audit-log/{pk}/", {"new_value": "x"}).status_code == 405
    assert client.delete(f"{API}audit-log/{pk}/").status_code == 405
    assert AuditEntry.objects.count() == 3


def test_an_outsider_cannot_read_the_log(outsider: User) -> None:
    client = APIClient()
    client.force_authenticate(outsider)
    assert client.get(f"{API}audit-log/").status_code == 403
