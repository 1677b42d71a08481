"""Whatever a client sends, /api/v1/ answers with a clean 4xx, never a 500: bad JSON, the wrong
JSON type, wrong types for every kind of field, huge and negative numbers, huge strings, null,
unknown fields, control characters, NUL, lone surrogates, unicode garbage, odd IPv6."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework import serializers
from rest_framework.test import APIClient

from connectors.api import ConnectorSerializer
from servers.api import (
    AcceptedDomainSerializer,
    CertificateSerializer,
    MailboxSerializer,
    RoutingGroupSerializer,
    ServerSerializer,
    SmtpCredentialSerializer,
    VirtualServerSerializer,
)
from smtpadmin.api import unstorable_text
from smtpadmin.api_views import OrganizationSerializer, UserSerializer
from tests.smtpadmin.test_api_permissions import (
    API,
    BY_PATH,
    make_server,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db

SERIALIZERS: dict[str, Any] = {
    "routing-groups": RoutingGroupSerializer,
    "servers": ServerSerializer,
    "virtual-servers": VirtualServerSerializer,
    "accepted-domains": AcceptedDomainSerializer,
    "mailboxes": MailboxSerializer,
    "smtp-credentials": SmtpCredentialSerializer,
    "certificates": CertificateSerializer,
    "connectors": ConnectorSerializer,
    "users": UserSerializer,
    "organization": OrganizationSerializer,
}
WRITABLE = sorted(SERIALIZERS)

# Values of every JSON type and then some: each is sent for every writable field.
GARBAGE: list[Any] = [
    None,
    True,
    -1,
    10**30,
    -(10**30),
    1.5,
    "",
    "x" * 100_000,
    "a\x00b",
    "\ud800",
    "\u202etxt.exe",
    "💩.example",
    "é" * 300,
    "line\r\nbreak",
    "<script>alert(1)</script>",
    "2001:db8::1",
    "::ffff:192.0.2.1",
    "fe80::1%eth0",
    [],
    [1, "a", None],
    ["\x00"],
    [["nested"]],
    {},
    {"domain": "a.example", "cost": 10**30},
    [{"domain": "\ud800", "cost": "x"}],
]

BODIES = [
    b"{",
    b"not json",
    b"[]",
    b"[{}]",
    b'"a string"',
    b"42",
    b"null",
    b"true",
    b'{"port": NaN}',
    b'{"a": 1e999}',
    b"[" * 50_000,
    b'{"name": "\xff\xfe"}',
    b'{"name": "\x00"}',
]
# Not errors in themselves (an empty body is an empty object; the last duplicate key wins).
ODD_BUT_VALID_BODIES = [b"", b'{"name": "x", "name": 5}']


@pytest.fixture
def api(full_admin: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(full_admin)
    return client


def _assert_clean(response: Any, context: Any) -> None:
    assert response.status_code < 500, context
    assert response["Content-Type"] == "application/json", context
    if response.status_code == 400:
        body = response.json()
        assert isinstance(body, dict), context
        assert body, context
        for key, messages in body.items():
            assert isinstance(key, str)
            assert isinstance(messages, list | dict | str), (context, body)


def _send(api: APIClient, method: str, url: str, data: Any) -> Any:
    """JSON with ASCII escapes, so lone surrogates reach the server as a client could send them."""
    return api.generic(method, url, json.dumps(data), content_type="application/json")


def _writable_fields(path: str) -> list[str]:
    fields = SERIALIZERS[path]().fields
    return [name for name, f in fields.items() if not f.read_only]


def _urls(path: str) -> tuple[str, str]:
    resource = BY_PATH[path]
    obj = resource.make()
    if resource.singleton:
        return f"{API}{path}/", f"{API}{path}/"
    return f"{API}{path}/", f"{API}{path}/{obj.pk}/"


def _reaches_the_model(field: Any, value: Any) -> bool:
    """Does this value have the field's own type, so that it gets past the field and is seen
    by the model's ``clean()``? Values of other types are refused by the field itself, and NUL
    or lone surrogates by the serializer before any field: the all-at-once test covers them."""
    if unstorable_text(value):
        return False
    if value is None:
        return True
    if isinstance(
        field,
        serializers.JSONField
        | serializers.ListField
        | serializers.ListSerializer
        | serializers.ManyRelatedField,
    ):
        return isinstance(value, list | dict)
    if isinstance(field, serializers.BooleanField):
        return isinstance(value, bool)
    if isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


@pytest.mark.parametrize("path", WRITABLE)
def test_garbage_of_every_type_in_every_field_at_once_is_refused_cleanly(
    api: APIClient, path: str
) -> None:
    list_url, detail_url = _urls(path)
    names = _writable_fields(path)
    for value in GARBAGE:
        context = (path, repr(value)[:80])
        everything = dict.fromkeys(names, value)
        _assert_clean(_send(api, "PATCH", detail_url, everything), context)
        if not BY_PATH[path].singleton:
            _assert_clean(_send(api, "POST", list_url, everything), context)


@pytest.mark.parametrize("path", WRITABLE)
def test_garbage_of_the_right_type_in_any_field_is_refused_cleanly(
    api: APIClient, path: str
) -> None:
    _list_url, detail_url = _urls(path)
    fields = SERIALIZERS[path]().fields
    for name in _writable_fields(path):
        for value in GARBAGE:
            if _reaches_the_model(fields[name], value):
                context = (path, name, repr(value)[:80])
                _assert_clean(_send(api, "PATCH", detail_url, {name: value}), context)


@pytest.mark.parametrize("path", [*WRITABLE, "audit-log"])
def test_a_body_that_is_not_a_json_object_is_a_400(api: APIClient, path: str) -> None:
    list_url, detail_url = _urls(path)
    for body in [*BODIES, *ODD_BUT_VALID_BODIES]:
        for method, url in (("POST", list_url), ("PUT", detail_url), ("PATCH", detail_url)):
            # Bytes go out as they are (the stubs only know str), invalid UTF-8 included.
            response = api.generic(method, url, body, content_type="application/json")  # type: ignore[arg-type]
            context = (method, url, body[:40])
            _assert_clean(response, context)
            if path == "audit-log" or (path == "organization" and method == "POST"):
                assert response.status_code == 405, context
            elif body in BODIES:
                assert response.status_code == 400, context
                if not body.startswith(b'{"'):
                    assert {"detail", "non_field_errors"} & set(response.json()), context


def test_other_content_types_are_415(api: APIClient) -> None:
    response = api.generic("POST", f"{API}routing-groups/", "name=x", content_type="text/plain")
    assert response.status_code == 415
    response = api.post(f"{API}routing-groups/", {"name": "x"}, format="multipart")
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        # integers
        ("virtual-servers", "port", "twenty-five"),
        ("virtual-servers", "port", 10**30),
        ("virtual-servers", "port", -25),
        ("virtual-servers", "port", 0),
        ("virtual-servers", "port", 65536),
        ("virtual-servers", "port", 25.5),
        ("virtual-servers", "port", None),
        ("virtual-servers", "message_size_limit_kb", 2**31),
        ("virtual-servers", "max_hop_count", 1000),
        ("organization", "tracking_retention_days", 10**30),
        ("organization", "recipients_limit", -1),
        ("smtp-credentials", "send_limit_per_hour", [1]),
        # booleans
        ("virtual-servers", "logging_enabled", "maybe"),
        ("virtual-servers", "logging_enabled", None),
        ("connectors", "use_dns", [True]),
        ("users", "is_active", {"yes": True}),
        # lists (JSON fields normalised by the model)
        ("virtual-servers", "relay_list", "10.0.0.0/8"),
        ("virtual-servers", "relay_list", ["10.0.0.0/33"]),
        ("virtual-servers", "relay_list", [{"ip": "10.0.0.1"}]),
        ("virtual-servers", "external_dns_servers", ["dns.example"]),
        ("connectors", "sender_exceptions", "someone@example.com"),
        ("organization", "global_deny_list", ["example.com"]),
        ("organization", "block_list_providers", [""]),
        ("organization", "block_list_providers", ["zen\x00.example"]),
        ("organization", "block_list_providers", "zen.example"),
        ("organization", "blocked_senders", [None]),
        # foreign keys
        ("virtual-servers", "server", "mercury"),
        ("virtual-servers", "server", 10**30),
        ("virtual-servers", "server", [1]),
        ("virtual-servers", "server", {"id": 1}),
        ("virtual-servers", "certificate", 424242),
        ("servers", "routing_group", -1),
        ("connectors", "routing_group", None),
        # many-to-many
        ("connectors", "bridgeheads", []),
        ("connectors", "bridgeheads", [424242]),
        ("connectors", "bridgeheads", [10**30]),
        ("connectors", "bridgeheads", "1"),
        ("connectors", "bridgeheads", [[1]]),
        ("smtp-credentials", "virtual_servers", [None]),
        ("smtp-credentials", "virtual_servers", {"a": 1}),
        # choices
        ("virtual-servers", "desired_state", "RUNNING"),
        ("virtual-servers", "desired_state", 1),
        ("virtual-servers", "relay_mode", ["only_listed"]),
        ("accepted-domains", "type", "authoritative "),
        ("users", "role", "superuser"),
        ("users", "role", ["full_administrator"]),
        ("connectors", "schedule_mode", None),
        # times
        ("connectors", "schedule_daily_time", "25:00"),
        ("connectors", "schedule_daily_time", "noon"),
        ("connectors", "schedule_daily_time", 1200),
        ("connectors", "schedule_daily_time", "12:00:00\x00"),
        ("connectors", "schedule_grid", "1" * 673),
        # text and domains
        ("accepted-domains", "domain", "exa mple.com"),
        ("accepted-domains", "domain", "a" * 64 + ".example"),
        ("accepted-domains", "domain", "x." * 200 + "example"),
        ("accepted-domains", "domain", "example.com\x00"),
        ("accepted-domains", "domain", "ex\u202eample.com"),
        ("accepted-domains", "domain", "-example.com"),
        ("accepted-domains", "domain", "192.0.2.1"),
        ("accepted-domains", "domain", "a*.example.com"),
        ("accepted-domains", "domain", "\u0000"),
        ("accepted-domains", "domain", "xn--zz.example"),
        ("accepted-domains", "domain", "."),
        ("servers", "fqdn", "host_name.example"),
        ("mailboxes", "address", "no-at-sign"),
        ("mailboxes", "address", "a@b@example.com"),
        ("mailboxes", "address", "ü@example.com"),
        ("smtp-credentials", "username", "has space"),
        ("smtp-credentials", "username", "tab\tname"),
        ("smtp-credentials", "username", "nul\x00name"),
        ("smtp-credentials", "username", "bell\x07"),
        ("smtp-credentials", "username", "x" * 201),
        ("smtp-credentials", "username", None),
        ("smtp-credentials", "password", "short"),
        ("users", "username", "has space"),
        ("users", "username", "x" * 151),
        ("users", "email", "not-an-address"),
        ("connectors", "smart_hosts", "[192.0.2.1"),
        ("connectors", "smart_hosts", "[2001:db8::1]"),
        ("connectors", "smart_hosts", "2001:db8::1"),
        ("connectors", "smart_hosts", "relay.example:99999"),
        ("connectors", "smart_hosts", "relay.example:-1"),
        ("connectors", "smart_hosts", "[IPv6:2001:db8::g]"),
        ("certificates", "certificate_pem", "-----BEGIN CERTIFICATE-----\nxx\n"),
        ("certificates", "alt_names", ["bad name"]),
        # IPv6 edge cases
        ("virtual-servers", "ip_address", "2001:db8::1::1"),
        ("virtual-servers", "ip_address", "1:2:3:4:5:6:7:8:9"),
        ("virtual-servers", "ip_address", "::ffff:999.1.1.1"),
        ("virtual-servers", "ip_address", "[::1]"),
        ("virtual-servers", "ip_address", "2001:db8::/64"),
        ("virtual-servers", "ip_address", "２００１:db8::1"),
        ("virtual-servers", "ip_address", "1.2.3"),
        ("virtual-servers", "ip_address", "256.0.0.1"),
        ("virtual-servers", "ip_address", ":" * 10_000),
        # unknown fields
        ("connectors", "smarthost", "relay.example"),
        ("virtual-servers", "password", "x"),
        ("users", "is_superuser", True),
        ("users", "groups", [1]),
        ("smtp-credentials", "password_hash", "pbkdf2$..."),
        ("organization", "id", 2),
    ],
)
def test_a_wrong_value_is_a_400_naming_the_field(
    api: APIClient, path: str, field: str, value: Any
) -> None:
    _list_url, detail_url = _urls(path)
    response = _send(api, "PATCH", detail_url, {field: value})
    assert response.status_code == 400, response.content[:300]
    if field == "id" and path == "organization":
        return  # read-only: tolerated by PATCH; checked below
    assert field in response.json(), response.json()


def test_read_only_fields_sent_back_are_tolerated_and_ignored(api: APIClient) -> None:
    vs = make_virtual_server()
    shown = api.get(f"{API}virtual-servers/{vs.pk}/").json()
    echoed = api.put(f"{API}virtual-servers/{vs.pk}/", {**shown, "state": "running", "id": 999})
    assert echoed.status_code == 200, echoed.json()
    assert echoed.json()["id"] == vs.pk
    assert echoed.json()["state"] == "unknown"


def test_unknown_fields_inside_an_address_space_are_named(api: APIClient) -> None:
    from tests.smtpadmin.test_api_permissions import make_connector

    connector = make_connector()
    response = api.patch(
        f"{API}connectors/{connector.pk}/",
        {"address_spaces": [{"domain": "a.example", "cost": 1, "costs": 2}]},
        format="json",
    )
    assert response.status_code == 400
    assert "costs" in json.dumps(response.json()["address_spaces"])


def test_an_unknown_field_with_a_surrogate_in_its_name_is_answered(api: APIClient) -> None:
    response = _send(api, "POST", f"{API}routing-groups/", {"name": "x", "\ud800": 1})
    assert response.status_code == 400
    assert list(response.json()) == ["\\ud800"]


def test_a_second_virtual_server_on_a_taken_binding_is_a_400_not_a_409(api: APIClient) -> None:
    vs = make_virtual_server()
    response = api.post(
        f"{API}virtual-servers/",
        {"server": vs.server_id, "ip_address": vs.ip_address, "port": vs.port},
    )
    assert response.status_code == 400
    assert "already listens" in response.json()["ip_address"][0]


@pytest.mark.parametrize(
    "query",
    [
        {"page": "-1"},
        {"page": "0"},
        {"page": "9" * 40},
        {"ordering": "-;drop table"},
        {"ordering": "?"},
        {"search": "\x00"},
        {"search": "x" * 10_000},
        {"id": "abc"},
        {"server": "abc"},
        {"server": "9" * 40},
        {"port": "9" * 40},
        {"port": "-1"},
        {"desired_state": "nope"},
        {"enabled": "maybe"},
        {"username": "a\x00b"},
        {"since": "yesterday"},
        {"until": "2024-13-45T99:99"},
        {"object_id": "\x00"},
        {"routing_group": "1.5"},
    ],
)
def test_odd_query_parameters_never_break_a_list(api: APIClient, query: dict[str, str]) -> None:
    make_virtual_server()
    for path in [*sorted(set(SERIALIZERS) - {"organization"}), "audit-log"]:
        _assert_clean(api.get(f"{API}{path}/", query), (path, query))


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"recipient": ""},
        {"recipient": "\x00"},
        {"recipient": "x" * 100_000},
        {"recipient": "a@b", "sender": "<>"},
        {"recipient": "a@b", "size": "-1"},
        {"recipient": "a@b", "size": "9" * 40},
        {"recipient": "a@b", "virtual_server": "9" * 40},
        {"recipient": "a@b", "priority": "urgent"},
        {"recipient": "a@💩.example", "sender": "\u202e@x"},
    ],
)
def test_odd_routing_questions_never_break_the_simulator(
    api: APIClient, query: dict[str, str]
) -> None:
    make_virtual_server()
    _assert_clean(api.get(f"{API}routing/resolve", query), query)


def test_a_huge_json_document_is_refused_without_a_500(api: APIClient) -> None:
    server = make_server()
    payload = {"server": server.pk, "port": 25, "relay_list": ["10.0.0.1"] * 20_000}
    response = _send(api, "POST", f"{API}virtual-servers/", payload)
    assert response.status_code in (201, 400)
    too_big = _send(
        api,
        "PATCH",
        f"{API}virtual-servers/{response.json().get('id', 0)}/",
        {"name": "x" * 3_000_000},
    )
    assert too_big.status_code == 413
    assert too_big.json() == {"detail": "The request body is too large."}
