"""The relay's configuration pass (``relay.smtp.loader.load``, every second): routing's snapshot
and the mailbox directory are read again only when they changed, by any means, the API
included; otherwise a pass is a few small queries however large the configuration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connectors import topology as topology_module
from connectors.routing import resolve
from connectors.snapshot import MessageFacts
from connectors.topology import shared_topologies
from relay.smtp import loader
from relay.smtp.loader import RelayConfiguration, load
from servers.models import VirtualServer
from tests.connectors.test_topology import (
    make_accepted_domain,
    make_connector,
    make_mailbox,
    make_server,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db


class Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Counts how often routing's snapshot is built from the database."""
    counter = Counter()
    real = topology_module.build_topology

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(topology_module, "build_topology", counting)
    shared_topologies.clear()
    yield counter
    shared_topologies.clear()


@pytest.fixture
def relay_vs() -> VirtualServer:
    make_accepted_domain("example.com")
    make_mailbox("bob@example.com")
    server = make_server("mx1")
    vs = make_virtual_server(server, name="Default")
    # Virtual servers of other servers: bridgeheads elsewhere, never loaded as listeners.
    for n in range(3):
        make_virtual_server(make_server(f"other{n}"), name=f"Other {n}")
    make_connector("Internet", [("*", 10)], [vs])
    make_connector("Partner", [("partner.test", 1)], [vs])
    return vs


def route(configuration: RelayConfiguration, vs: VirtualServer, recipient: str) -> Any:
    topology = configuration.topologies[vs.pk]
    return resolve(recipient, "alice@example.com", MessageFacts(), topology)


def test_a_pass_with_nothing_changed_builds_nothing_and_reads_little(
    relay_vs: VirtualServer, builds: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load(relay_vs.server_id)
    directory_reads = Counter()
    real_directory = loader.load_directory

    def counting_directory() -> Any:
        directory_reads.calls += 1
        return real_directory()

    monkeypatch.setattr(loader, "load_directory", counting_directory)

    with CaptureQueriesContext(connection) as captured:
        second = load(relay_vs.server_id, first)
        third = load(relay_vs.server_id, second)

    assert builds.calls == 1
    assert directory_reads.calls == 0
    assert third.topologies[relay_vs.pk] is first.topologies[relay_vs.pk]
    assert third.directory is first.directory
    # Per pass: its virtual servers, the organization, the directory's and routing's
    # fingerprints; nothing that grows with connectors or mailboxes.
    assert len(captured) <= 2 * 8, [q["sql"] for q in captured]
    assert not any('"connectors_addressspace"."domain"' in q["sql"] for q in captured)


def test_a_pass_after_a_change_through_the_api_routes_by_it(
    relay_vs: VirtualServer, builds: Counter, full_admin: User, api_as: Any
) -> None:
    api = api_as(full_admin)
    configuration = load(relay_vs.server_id)
    assert route(configuration, relay_vs, "x@new.test").connector.name == "Internet"
    partner = api.get("/api/v1/connectors/", {"name": "Partner"}).json()["results"][0]

    answer = api.patch(
        f"/api/v1/connectors/{partner['id']}/",
        {"address_spaces": [{"domain": "new.test", "cost": 1}]},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    configuration = load(relay_vs.server_id, configuration)

    assert builds.calls == 2
    assert route(configuration, relay_vs, "x@new.test").connector.name == "Partner"

    answer = api.post(
        "/api/v1/accepted-domains/", {"domain": "new.test", "type": "authoritative"}, format="json"
    )
    assert answer.status_code == 201, answer.content
    configuration = load(relay_vs.server_id, configuration)

    assert builds.calls == 3
    assert route(configuration, relay_vs, "x@new.test").kind == "local"
    assert any(d.pattern == "new.test" for d in configuration.directory.accepted_domains)


def test_each_listener_gets_the_shared_snapshot_with_its_own_source(
    relay_vs: VirtualServer, builds: Counter
) -> None:
    second = make_virtual_server(
        VirtualServer.objects.get(pk=relay_vs.pk).server, port=2526, smart_hosts="relay.test"
    )

    configuration = load(relay_vs.server_id)

    first_view, second_view = (configuration.topologies[vs.pk] for vs in (relay_vs, second))
    assert builds.calls == 1
    assert first_view.index is second_view.index
    assert (first_view.source_virtual_server_id, first_view.smart_hosts) == (relay_vs.pk, "")
    assert (second_view.source_virtual_server_id, second_view.smart_hosts) == (
        second.pk,
        "relay.test",
    )
