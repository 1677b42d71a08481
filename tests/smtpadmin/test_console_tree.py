"""The console tree with large containers: branches load their children only when opened
(the htmx fragment), at most BRANCH_LIMIT of them with "More…", and the path to the current
page is open on the server, so the current item shows without a script."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from connectors.models import Connector
from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.navigation import BRANCH_LIMIT

pytestmark = pytest.mark.django_db

MANY = BRANCH_LIMIT + 30


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def many_connectors(db: Any) -> Callable[[int], list[Connector]]:
    """``many_connectors(n)``: n connectors "c000".. in the first routing group, by name."""

    def make(count: int) -> list[Connector]:
        group = RoutingGroup.first()
        Connector.objects.bulk_create(
            Connector(name=f"c{n:03d}", routing_group=group) for n in range(count)
        )
        return list(Connector.objects.order_by("name"))

    return make


def connector_nodes(html: str) -> list[str]:
    return re.findall(r'data-key="(connector-\d+)"', html)


def test_a_page_outside_the_connectors_renders_none_of_them(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    many_connectors(MANY)
    group = RoutingGroup.first()
    html = logged_in(view_only).get("/").content.decode()
    assert connector_nodes(html) == []
    # The container is there, closed, and loads its children when opened.
    assert f'data-key="routing-group-{group.pk}-connectors" aria-expanded="false"' in html
    assert f'hx-get="/tree/routing-group-{group.pk}-connectors/"' in html
    assert f'hx-target="#tree-routing-group-{group.pk}-connectors"' in html


def test_the_fragment_holds_the_first_connectors_and_more(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    connectors = many_connectors(MANY)
    group = RoutingGroup.first()
    response = logged_in(view_only).get(f"/tree/routing-group-{group.pk}-connectors/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # list items for the branch's group, not a page
    assert connector_nodes(html) == [f"connector-{c.pk}" for c in connectors[:BRANCH_LIMIT]]
    more = f'<a href="/connectors/routing-groups/{group.pk}/connectors/">More…</a>'
    assert more in html


def test_a_small_container_has_no_more(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    connectors = many_connectors(3)
    group = RoutingGroup.first()
    html = logged_in(view_only).get(f"/tree/routing-group-{group.pk}-connectors/").content
    assert connector_nodes(html.decode()) == [f"connector-{c.pk}" for c in connectors]
    assert "More…" not in html.decode()


def test_the_current_connector_shows_even_beyond_the_first(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    last = many_connectors(MANY)[-1]
    group = RoutingGroup.first()
    html = logged_in(view_only).get(f"/connectors/{last.pk}/").content.decode()
    nodes = connector_nodes(html)
    assert f"connector-{last.pk}" in nodes
    assert len(nodes) == BRANCH_LIMIT + 1
    assert f'data-key="routing-group-{group.pk}-connectors" aria-expanded="true"' in html
    assert f'<a href="/connectors/{last.pk}/" aria-current="page">{last.name}</a>' in html


def test_the_containers_own_page_opens_it(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    many_connectors(MANY)
    group = RoutingGroup.first()
    html = logged_in(view_only).get(f"/connectors/routing-groups/{group.pk}/connectors/")
    assert len(connector_nodes(html.content.decode())) == BRANCH_LIMIT


def test_a_virtual_server_page_opens_its_server_and_smtp_container(
    view_only: User,
) -> None:
    group = RoutingGroup.first()
    servers = Server.objects.bulk_create(
        Server(name=f"s{n:03d}", routing_group=group) for n in range(MANY)
    )
    last = Server.objects.order_by("name").last()
    assert last is not None and len(servers) == MANY
    vs = VirtualServer.objects.create(server=last, name="Listener", port=25)
    html = logged_in(view_only).get(f"/servers/virtual-servers/{vs.pk}/sessions/").content
    text = html.decode()
    assert len(re.findall(r'data-key="server-\d+"', text)) == BRANCH_LIMIT + 1
    assert f'data-key="server-{last.pk}"' in text
    assert f'data-key="server-{last.pk}-smtp" aria-expanded="true"' in text
    assert f'data-key="vs-{vs.pk}-sessions"' in text
    assert '<a href="/servers/">More…</a>' in text


def test_an_unknown_branch_is_a_404(view_only: User) -> None:
    client = logged_in(view_only)
    assert client.get("/tree/no-such-branch/").status_code == 404
    assert client.get("/tree/connector-1/").status_code == 404  # a leaf, not a branch


def test_the_fragment_needs_a_role(outsider: User) -> None:
    assert logged_in(outsider).get("/tree/servers/").status_code == 403
    response = Client().get("/tree/servers/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_small_organization_opens_every_container_as_before(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    connectors = many_connectors(3)
    group = RoutingGroup.first()
    html = logged_in(view_only).get("/organization/").content.decode()
    assert connector_nodes(html) == [f"connector-{c.pk}" for c in connectors]
    assert f'data-key="routing-group-{group.pk}-connectors" aria-expanded="true"' in html
    assert "hx-get" not in html


def test_a_page_costs_the_same_queries_with_many_connectors(
    view_only: User, many_connectors: Callable[[int], list[Connector]]
) -> None:
    client = logged_in(view_only)
    many_connectors(BRANCH_LIMIT + 1)
    client.get("/")

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    last = Connector.objects.order_by("name").last()
    assert last is not None
    before = (queries("/"), queries(f"/connectors/{last.pk}/"))
    group = RoutingGroup.first()
    Connector.objects.bulk_create(
        Connector(name=f"d{n:04d}", routing_group=group) for n in range(500)
    )
    assert (queries("/"), queries(f"/connectors/{last.pk}/")) == before
