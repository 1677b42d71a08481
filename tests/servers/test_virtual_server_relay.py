"""Whether a virtual server is an open relay, and why, in an administrator's words; closing
relay keeps the computers deliberately listed and is audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from servers.models import RoutingGroup, Server, VirtualServer
from servers.models.virtual_server import open_relay_entry
from smtpadmin.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def vs(db: Any) -> VirtualServer:
    server = Server.objects.create(name="ex1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=server, port=25)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("0.0.0.0/0", "0.0.0.0/0, which is every IPv4 address"),
        ("::/0", "::/0, which is every IPv6 address"),
        ("::ffff:0:0/96", "includes every IPv4 address (written as IPv4-mapped IPv6)"),
        ("64.0.0.0/2", "64.0.0.0/2, which is 1/4 of all IPv4 addresses on the Internet"),
        ("2000::/3", "2000::/3, which is 1/8 of all IPv6 addresses on the Internet"),
        ("com", "'com', which matches every computer whose reverse DNS name ends in .com"),
        ("*.net", "'*.net', which matches every computer whose reverse DNS name ends in .net"),
    ],
)
def test_an_entry_that_lets_strangers_relay_is_explained(entry: str, reason: str) -> None:
    assert reason in open_relay_entry(entry)


@pytest.mark.parametrize(
    "entry",
    [
        "192.0.2.25",
        "192.0.2.0/24",
        "10.0.0.0/8",
        "fc00::/7",
        "2001:db8::/32",
        "example.com",
        "*.example.com",
        "not an entry!",
    ],
)
def test_an_entry_for_known_computers_is_not_open(entry: str) -> None:
    assert open_relay_entry(entry) == ""


def test_the_default_virtual_server_is_closed(vs: VirtualServer) -> None:
    assert vs.open_relay_reasons() == []


def test_relay_for_all_except_the_list_is_open(vs: VirtualServer) -> None:
    vs.relay_mode = "all_except_listed"
    vs.relay_list = ["198.51.100.7"]
    assert vs.open_relay_reasons() == ["relay is allowed for all computers except the 1 listed"]
    assert vs.closed_relay_list() == []  # the refused computer must not become an allowed one


def test_closed_relay_list_drops_only_the_open_entries(vs: VirtualServer) -> None:
    vs.relay_list = ["192.0.2.10", "0.0.0.0/0", "example.com", "::/0"]
    assert len(vs.open_relay_reasons()) == 2
    assert vs.closed_relay_list() == ["192.0.2.10", "example.com"]


def test_close_relay_is_saved_and_audited(vs: VirtualServer, administrator: User) -> None:
    VirtualServer.objects.filter(pk=vs.pk).update(
        relay_mode="all_except_listed", relay_list=["198.51.100.7"]
    )
    vs.refresh_from_db()
    assert vs.close_relay(by=administrator) is True
    stored = VirtualServer.objects.get(pk=vs.pk)
    assert (stored.relay_mode, stored.relay_list) == ("only_listed", [])
    assert (vs.relay_mode, vs.relay_list) == ("only_listed", [])
    fields = set(AuditEntry.objects.filter(user=administrator).values_list("field", flat=True))
    assert fields == {"relay_mode", "relay_list"}


def test_close_relay_does_nothing_when_closed(vs: VirtualServer, administrator: User) -> None:
    assert vs.close_relay(by=administrator) is False
    assert not AuditEntry.objects.exists()
