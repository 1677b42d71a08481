"""The configuration resources of /api/v1/ used the way scripts use them: round trips,
pagination, filters, the DESIGN field names, normalised values, nested address spaces, virtual
server profiles and actions, delete protection."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from connectors.models import Connector
from servers.models import AcceptedDomain, RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry
from tests.smtpadmin.test_api_permissions import (
    API,
    CREATE,
    CRUD,
    PATCH,
    RESOURCES,
    UPDATE,
    connector_payload,
    make_certificate,
    make_connector,
    make_domain,
    make_mailbox,
    make_server,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db

CRUD_RESOURCES = [r for r in RESOURCES if set(CRUD) <= set(r.operations)]


@pytest.fixture
def api(full_admin: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(full_admin)
    return client


def _same(sent: dict[str, Any], shown: dict[str, Any]) -> None:
    """Every plain value sent comes back (write-only and nested fields are checked elsewhere)."""
    for key, value in sent.items():
        if key in ("password", "generate_self_signed", "common_name", "address_spaces"):
            continue
        assert shown[key] == value, (key, shown)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("resource", CRUD_RESOURCES, ids=lambda r: r.path)
def test_a_resource_can_be_created_read_replaced_patched_and_deleted(
    api: APIClient, resource: Any
) -> None:
    url = f"{API}{resource.path}/"
    sent = resource.payload(CREATE, None)
    created = api.post(url, sent, format="json")
    assert created.status_code == 201, created.json()
    _same(sent, created.json())
    detail = f"{url}{created.json()['id']}/"
    assert api.get(detail).json() == created.json()
    obj = resource.make()
    detail = f"{url}{obj.pk}/"

    sent = resource.payload(UPDATE, obj)
    replaced = api.put(detail, sent, format="json")
    assert replaced.status_code == 200, replaced.json()
    _same(sent, replaced.json())
    assert api.get(detail).json() == replaced.json()

    sent = resource.payload(PATCH, obj)
    patched = api.patch(detail, sent, format="json")
    assert patched.status_code == 200, patched.json()
    _same(sent, patched.json())
    assert api.get(detail).json() == patched.json()

    assert api.delete(detail).status_code == 204
    assert api.get(detail).status_code == 404
    assert api.delete(detail).status_code == 404


@pytest.mark.parametrize("resource", CRUD_RESOURCES, ids=lambda r: r.path)
@pytest.mark.parametrize("bad_id", ["999999", "not-a-number", "99999999999999999999999999"])
def test_an_unknown_id_is_404_for_every_method(api: APIClient, resource: Any, bad_id: str) -> None:
    url = f"{API}{resource.path}/{bad_id}/"
    assert api.get(url).status_code == 404
    assert api.put(url, resource.payload(CREATE, None), format="json").status_code == 404
    assert api.patch(url, {}, format="json").status_code == 404
    assert api.delete(url).status_code == 404


def test_an_unknown_virtual_server_cannot_be_started(api: APIClient) -> None:
    assert api.post(f"{API}virtual-servers/424242/start/").status_code == 404


def test_the_organization_settings_can_be_read_and_changed(api: APIClient) -> None:
    shown = api.get(f"{API}organization/").json()
    assert shown["recipients_limit"] == 5000
    assert shown["sending_size_limit_kb"] == 10240
    changed = api.patch(
        f"{API}organization/",
        {"global_deny_list": ["192.0.2.7", "198.51.100.0/24"], "recipients_limit": None},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert changed.json()["global_deny_list"] == ["192.0.2.7", "198.51.100.0/24"]
    assert changed.json()["recipients_limit"] is None


# --- lists: pagination, filters, ordering, search --------------------------------------------


def test_lists_are_paginated_with_count_next_and_results(api: APIClient) -> None:
    AcceptedDomain.objects.bulk_create(
        AcceptedDomain(domain=f"d{i:03}.example.com") for i in range(55)
    )
    first = api.get(f"{API}accepted-domains/").json()
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"].endswith("/api/v1/accepted-domains/?page=2")
    second = api.get(f"{API}accepted-domains/", {"page": 2}).json()
    assert len(second["results"]) == 5
    assert second["next"] is None
    assert api.get(f"{API}accepted-domains/", {"page": 3}).status_code == 404
    assert api.get(f"{API}accepted-domains/", {"page": "x"}).status_code == 404


def test_accepted_domains_filter_by_type_and_order_by_domain(api: APIClient) -> None:
    make_domain("b.example.com", type="internal_relay")
    make_domain("a.example.com", type="internal_relay")
    make_domain("c.example.com", type="authoritative")
    shown = api.get(f"{API}accepted-domains/", {"type": "internal_relay", "ordering": "-domain"})
    assert [d["domain"] for d in shown.json()["results"]] == ["b.example.com", "a.example.com"]
    shown = api.get(f"{API}accepted-domains/", {"ordering": "domain"})
    assert shown.json()["results"][0]["domain"] == "a.example.com"
    assert api.get(f"{API}accepted-domains/", {"type": "nonsense"}).status_code == 400


def test_virtual_servers_filter_by_server_and_desired_state(api: APIClient) -> None:
    mercury, venus = make_server("mercury"), make_server("venus")
    make_virtual_server(mercury, port=25)
    paused = make_virtual_server(venus, name="Paused", port=26)
    paused.pause()
    shown = api.get(f"{API}virtual-servers/", {"server": venus.pk}).json()
    assert [v["name"] for v in shown["results"]] == ["Paused"]
    shown = api.get(f"{API}virtual-servers/", {"desired_state": "paused"}).json()
    assert [v["id"] for v in shown["results"]] == [paused.pk]
    shown = api.get(f"{API}virtual-servers/", {"ordering": "-port"}).json()
    assert [v["port"] for v in shown["results"]] == [26, 25]


def test_connectors_filter_by_use_dns_and_search_by_address_space(api: APIClient) -> None:
    bridgehead = make_virtual_server()
    make_connector([bridgehead], name="Internet")
    partner = make_connector([bridgehead], name="Partner", spaces=(("partner.example", 1),))
    Connector.objects.filter(pk=partner.pk).update(use_dns=False, smart_hosts="relay.example.net")
    shown = api.get(f"{API}connectors/", {"use_dns": "false"}).json()
    assert [c["name"] for c in shown["results"]] == ["Partner"]
    shown = api.get(f"{API}connectors/", {"search": "partner.exa"}).json()
    assert [c["name"] for c in shown["results"]] == ["Partner"]


def test_servers_and_users_filter_and_search(api: APIClient, view_only: User) -> None:
    group = RoutingGroup.objects.create(name="Branch")
    Server.objects.create(name="branch-1", routing_group=group)
    make_server("hq-1")
    shown = api.get(f"{API}servers/", {"routing_group": group.pk}).json()
    assert [s["name"] for s in shown["results"]] == ["branch-1"]
    shown = api.get(f"{API}users/", {"search": "vera"}).json()
    assert [u["username"] for u in shown["results"]] == ["vera-viewer"]
    assert shown["results"][0]["role"] == "view_only"


def test_an_unknown_ordering_field_is_ignored_not_an_error(api: APIClient) -> None:
    make_domain("example.com")
    assert api.get(f"{API}accepted-domains/", {"ordering": "password_hash"}).status_code == 200


# --- the field names scripts rely on ----------------------------------------------------


def test_virtual_servers_show_the_contract_fields(api: APIClient) -> None:
    vs = make_virtual_server()
    shown = api.get(f"{API}virtual-servers/{vs.pk}/").json()
    assert {"id", "name", "server", "ip_address", "port", "desired_state", "state"} <= set(shown)
    assert shown["server"] == vs.server_id
    assert shown["desired_state"] == "running"
    assert shown["state"] == "unknown"


def test_a_virtual_server_on_all_unassigned_addresses_shows_a_null_ip(api: APIClient) -> None:
    server = make_server()
    created = api.post(
        f"{API}virtual-servers/", {"server": server.pk, "ip_address": None, "port": 25}
    )
    assert created.status_code == 201, created.json()
    assert created.json()["ip_address"] is None
    assert created.json()["binding"] == "(All Unassigned):25"


def test_all_unassigned_clashes_with_any_address_on_the_same_port(api: APIClient) -> None:
    server = make_server()
    VirtualServer.objects.create(server=server, ip_address="192.0.2.1", port=25)
    clash = api.post(
        f"{API}virtual-servers/", {"server": server.pk, "ip_address": None, "port": 25}
    )
    assert clash.status_code == 400
    assert "already listens on 192.0.2.1:25" in clash.json()["port"][0]
    blank = api.post(f"{API}virtual-servers/", {"server": server.pk, "ip_address": "", "port": 26})
    assert blank.status_code == 400  # null, not "", means All Unassigned
    assert "ip_address" in blank.json()


def test_connectors_show_the_contract_fields(api: APIClient) -> None:
    connector = make_connector(spaces=(("*", 5),))
    shown = api.get(f"{API}connectors/{connector.pk}/").json()
    assert {"id", "name", "address_spaces", "use_dns", "smart_hosts", "bridgeheads"} <= set(shown)
    assert shown["address_spaces"] == [{"type": "SMTP", "domain": "*", "cost": 5}]
    assert shown["bridgeheads"] == [connector.bridgeheads.get().pk]
    assert shown["use_dns"] is True
    assert shown["smart_hosts"] == ""


def test_accepted_domains_mailboxes_and_credentials_show_the_contract_fields(
    api: APIClient,
) -> None:
    mailbox = make_mailbox()
    shown = api.get(f"{API}accepted-domains/{mailbox.domain_id}/").json()
    assert {"id", "domain", "type"} <= set(shown)
    assert shown["type"] == "authoritative"
    assert {"id", "address"} <= set(api.get(f"{API}mailboxes/{mailbox.pk}/").json())
    created = api.post(f"{API}smtp-credentials/", {"username": "app", "password": "app secret 1"})
    assert {"id", "username"} <= set(created.json())
    assert "password" not in created.json()


# --- normalisation shows in the answer -------------------------------------------------------


def test_an_international_domain_is_stored_and_shown_in_idna(api: APIClient) -> None:
    created = api.post(f"{API}accepted-domains/", {"domain": " Bücher.Example. "})
    assert created.status_code == 201, created.json()
    assert created.json()["domain"] == "xn--bcher-kva.example"
    pattern = api.post(f"{API}accepted-domains/", {"domain": "*.Straße.Example"})
    assert pattern.json()["domain"] == "*.xn--strae-oqa.example"


def test_smart_hosts_are_normalised(api: APIClient) -> None:
    created = api.post(
        f"{API}connectors/",
        connector_payload(smart_hosts=" Relay.Example.NET:2525, [192.0.2.1]  [IPv6:2001:DB8::0:1]"),
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["smart_hosts"] == (
        "relay.example.net:2525;[192.0.2.1];[IPv6:2001:db8::1]"
    )


def test_address_space_domains_are_normalised(api: APIClient) -> None:
    payload = connector_payload(address_spaces=[{"domain": "*.Beispiel.DE", "cost": 3}])
    created = api.post(f"{API}connectors/", payload, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["address_spaces"] == [
        {"type": "SMTP", "domain": "*.beispiel.de", "cost": 3}
    ]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::1", "::1"),
        ("192.0.2.10", "192.0.2.10"),
    ],
)
def test_virtual_server_addresses_are_normalised(api: APIClient, typed: str, stored: str) -> None:
    created = api.post(
        f"{API}virtual-servers/", {"server": make_server().pk, "ip_address": typed, "port": 25}
    )
    assert created.status_code == 201, created.json()
    assert created.json()["ip_address"] == stored


def test_two_spellings_of_one_ipv6_address_clash(api: APIClient) -> None:
    server = make_server()
    first = {"server": server.pk, "ip_address": "2001:db8::1", "port": 25}
    assert api.post(f"{API}virtual-servers/", first).status_code == 201
    second = {"server": server.pk, "ip_address": "2001:0DB8:0000::0001", "port": 25}
    clash = api.post(f"{API}virtual-servers/", second)
    assert clash.status_code == 400
    assert "ip_address" in clash.json()


def test_a_mailbox_address_is_lower_cased_and_linked_to_its_domain(api: APIClient) -> None:
    domain = make_domain("example.com")
    created = api.post(f"{API}mailboxes/", {"address": "Alice@EXAMPLE.com"})
    assert created.status_code == 201, created.json()
    assert created.json()["address"] == "alice@example.com"
    assert created.json()["domain"] == domain.pk


def test_a_mailbox_outside_an_authoritative_domain_is_refused(api: APIClient) -> None:
    make_domain("relay.example", type="external_relay")
    refused = api.post(f"{API}mailboxes/", {"address": "bob@relay.example"})
    assert refused.status_code == 400
    assert "address" in refused.json()


# --- nested address spaces -------------------------------------------------------------------


def test_put_replaces_the_address_spaces(api: APIClient) -> None:
    connector = make_connector(spaces=(("*", 1), ("example.org", 2)))
    payload = connector_payload(
        name="Internet", address_spaces=[{"domain": "example.net", "cost": 7}]
    )
    replaced = api.put(f"{API}connectors/{connector.pk}/", payload, format="json")
    assert replaced.status_code == 200, replaced.json()
    expected = [{"type": "SMTP", "domain": "example.net", "cost": 7}]
    assert replaced.json()["address_spaces"] == expected
    assert api.get(f"{API}connectors/{connector.pk}/").json()["address_spaces"] == expected
    assert list(connector.address_spaces.values_list("domain", flat=True)) == ["example.net"]


def test_patch_replaces_the_address_spaces_and_bridgeheads(api: APIClient) -> None:
    connector = make_connector(spaces=(("*", 1),))
    other = make_virtual_server(make_server("venus"))
    patched = api.patch(
        f"{API}connectors/{connector.pk}/",
        {
            "address_spaces": [{"domain": "a.example", "cost": 2}, {"domain": "b.example"}],
            "bridgeheads": [other.pk],
        },
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["address_spaces"] == [
        {"type": "SMTP", "domain": "a.example", "cost": 2},
        {"type": "SMTP", "domain": "b.example", "cost": 1},
    ]
    assert patched.json()["bridgeheads"] == [other.pk]
    assert patched.json() == api.get(f"{API}connectors/{connector.pk}/").json()


def test_patch_without_address_spaces_keeps_them(api: APIClient) -> None:
    connector = make_connector(spaces=(("*", 4),))
    patched = api.patch(f"{API}connectors/{connector.pk}/", {"admin_note": "x"}, format="json")
    assert patched.status_code == 200
    assert patched.json()["address_spaces"] == [{"type": "SMTP", "domain": "*", "cost": 4}]


@pytest.mark.parametrize(
    ("spaces", "why"),
    [
        ([], "empty"),
        ([{"domain": "a.example"}, {"domain": "A.EXAMPLE"}], "twice"),
        ([{"domain": "a*b.example"}], "pattern"),
        ([{"domain": "a.example", "cost": 0}], "cost"),
        ([{"domain": "a.example", "cost": 101}], "cost"),
        ([{"cost": 1}], "domain missing"),
    ],
)
def test_bad_address_spaces_are_refused_and_nothing_changes(
    api: APIClient, spaces: list[dict[str, Any]], why: str
) -> None:
    connector = make_connector(spaces=(("*", 1),))
    refused = api.patch(
        f"{API}connectors/{connector.pk}/", {"address_spaces": spaces}, format="json"
    )
    assert refused.status_code == 400, why
    assert "address_spaces" in refused.json()
    assert list(connector.address_spaces.values_list("domain", flat=True)) == ["*"]


# --- virtual servers: profiles and actions ---------------------------------------------------


def test_a_new_virtual_server_gets_the_exchange_2003_profile_by_default(api: APIClient) -> None:
    created = api.post(f"{API}virtual-servers/", {"server": make_server().pk, "port": 25}).json()
    assert created["message_size_limit_kb"] == 4096
    assert created["recipients_per_message"] == 64000
    assert created["session_size_limit_kb"] is None
    assert created["auth_basic"] is True
    assert [created[f"retry_{n}_minutes"] for n in ("first", "second", "third", "subsequent")] == [
        10,
        10,
        10,
        15,
    ]
    assert "profile" not in created


def test_the_iis6_profile_applies_its_defaults(api: APIClient) -> None:
    created = api.post(
        f"{API}virtual-servers/", {"server": make_server().pk, "port": 25, "profile": "iis6"}
    ).json()
    assert created["message_size_limit_kb"] == 2048
    assert created["session_size_limit_kb"] == 10240
    assert created["recipients_per_message"] == 100
    assert created["auth_basic"] is False
    assert [created[f"retry_{n}_minutes"] for n in ("first", "second", "third", "subsequent")] == [
        15,
        30,
        60,
        240,
    ]


def test_fields_sent_with_a_profile_win_over_the_profile(api: APIClient) -> None:
    created = api.post(
        f"{API}virtual-servers/",
        {"server": make_server().pk, "port": 25, "profile": "iis6", "recipients_per_message": 5},
    ).json()
    assert created["recipients_per_message"] == 5
    assert created["message_size_limit_kb"] == 2048


def test_a_profile_applies_only_when_creating(api: APIClient) -> None:
    vs = make_virtual_server()
    refused = api.patch(f"{API}virtual-servers/{vs.pk}/", {"profile": "iis6"})
    assert refused.status_code == 400
    assert "profile" in refused.json()
    unknown = api.post(
        f"{API}virtual-servers/", {"server": vs.server_id, "port": 26, "profile": "exchange2019"}
    )
    assert unknown.status_code == 400
    assert "profile" in unknown.json()


@pytest.mark.parametrize(
    ("action", "state"), [("stop", "stopped"), ("pause", "paused"), ("start", "running")]
)
def test_start_stop_and_pause_set_the_desired_state_and_are_audited(
    api: APIClient, full_admin: User, action: str, state: str
) -> None:
    vs = make_virtual_server()
    if action == "start":
        vs.stop()
    before = vs.desired_state
    answered = api.post(f"{API}virtual-servers/{vs.pk}/{action}/")
    assert answered.status_code == 200
    assert answered.json()["desired_state"] == state
    assert answered.json()["state"] == "unknown"  # the relay worker reports the actual state
    vs.refresh_from_db()
    assert vs.desired_state == state
    entry = AuditEntry.objects.get(action="action", object_id=str(vs.pk), user=full_admin)
    assert (entry.field, entry.old_value, entry.new_value) == ("desired_state", before, state)


def test_repeating_an_action_changes_nothing_and_writes_no_entry(api: APIClient) -> None:
    vs = make_virtual_server()
    assert api.post(f"{API}virtual-servers/{vs.pk}/start/").json()["desired_state"] == "running"
    assert not AuditEntry.objects.filter(action="action").exists()


def test_desired_state_cannot_be_set_to_nonsense_by_patch(api: APIClient) -> None:
    vs = make_virtual_server()
    refused = api.patch(f"{API}virtual-servers/{vs.pk}/", {"desired_state": "exploding"})
    assert refused.status_code == 400
    assert "desired_state" in refused.json()


def test_the_reported_state_is_read_only(api: APIClient) -> None:
    vs = make_virtual_server()
    api.patch(f"{API}virtual-servers/{vs.pk}/", {"state": "running"})
    vs.refresh_from_db()
    assert vs.state == "unknown"


# --- delete protection -----------------------------------------------------------------------


def test_a_server_with_virtual_servers_cannot_be_deleted(api: APIClient) -> None:
    vs = make_virtual_server()
    refused = api.delete(f"{API}servers/{vs.server_id}/")
    assert refused.status_code == 409
    assert "Default SMTP Virtual Server" in refused.json()["detail"]
    assert Server.objects.filter(pk=vs.server_id).exists()
    assert not AuditEntry.objects.filter(action="delete").exists()


def test_the_only_bridgehead_of_a_connector_cannot_be_deleted(api: APIClient) -> None:
    connector = make_connector(name="Internet")
    vs = connector.bridgeheads.get()
    refused = api.delete(f"{API}virtual-servers/{vs.pk}/")
    assert refused.status_code == 409
    assert "only bridgehead of: Internet" in refused.json()["detail"]
    other = make_virtual_server(vs.server, name="Second", port=2600)
    connector.bridgeheads.add(other)
    assert api.delete(f"{API}virtual-servers/{vs.pk}/").status_code == 204
    assert list(connector.bridgeheads.all()) == [other]


def test_objects_in_use_cannot_be_deleted(api: APIClient) -> None:
    mailbox = make_mailbox()
    assert api.delete(f"{API}accepted-domains/{mailbox.domain_id}/").status_code == 409
    server = make_server("venus")
    assert api.delete(f"{API}routing-groups/{server.routing_group_id}/").status_code == 409
    certificate = make_certificate()
    VirtualServer.objects.create(server=server, port=25, certificate=certificate)
    refused = api.delete(f"{API}certificates/{certificate.pk}/")
    assert refused.status_code == 409
    assert "in use" in refused.json()["detail"]


# --- the default accepted domain -------------------------------------------------------------


def test_making_a_domain_the_default_takes_the_flag_from_the_old_one(api: APIClient) -> None:
    old = make_domain("old.example", is_default=True)
    created = api.post(f"{API}accepted-domains/", {"domain": "new.example", "is_default": True})
    assert created.status_code == 201, created.json()
    assert created.json()["is_default"] is True
    old.refresh_from_db()
    assert old.is_default is False
    assert AuditEntry.objects.filter(object_id=str(old.pk), field="is_default").exists()

    back = api.patch(f"{API}accepted-domains/{old.pk}/", {"is_default": True})
    assert back.status_code == 200, back.json()
    assert list(AcceptedDomain.objects.filter(is_default=True)) == [old]


def test_a_wildcard_cannot_be_the_default_domain(api: APIClient) -> None:
    refused = api.post(f"{API}accepted-domains/", {"domain": "*.example.com", "is_default": True})
    assert refused.status_code == 400
    assert "is_default" in refused.json()


def test_star_is_refused_as_an_accepted_domain(api: APIClient) -> None:
    refused = api.post(f"{API}accepted-domains/", {"domain": "*"})
    assert refused.status_code == 400
    assert "open relay" in refused.json()["domain"][0]


def test_a_duplicate_name_is_a_400_with_the_field(api: APIClient) -> None:
    make_domain("example.com")
    refused = api.post(f"{API}accepted-domains/", {"domain": "EXAMPLE.com."})
    assert refused.status_code == 400
    assert "domain" in refused.json()
