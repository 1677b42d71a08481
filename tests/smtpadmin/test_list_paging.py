"""List pages page, sort and search on the server: one bounded page of rows whatever the
number of objects, sorted by a column of ?sort=, and query parameters that make no sense give
the first page, never an error."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from connectors.models import Connector
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer
from smtpadmin.listing import PAGE_SIZE, SHOWN_ON_DELETE

pytestmark = pytest.mark.django_db

COUNT = PAGE_SIZE * 2 + 17


@pytest.fixture
def connectors(db: Any) -> list[str]:
    """COUNT connectors "conn-0000".., the names in order."""
    group = RoutingGroup.first()
    names = [f"conn-{n:04d}" for n in range(COUNT)]
    Connector.objects.bulk_create(
        Connector(name=name, routing_group=group, enabled=n % 2 == 0)
        for n, name in enumerate(names)
    )
    return names


def table_names(client: Client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    table = html[html.index('<table class="list">') : html.index("</table>")]
    return re.findall(r'<a href="/connectors/\d+/">([^<]+)</a>', table)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_first_page_is_one_page_long(view_only: User, connectors: list[str]) -> None:
    client = logged_in(view_only)
    assert table_names(client, "/connectors/") == connectors[:PAGE_SIZE]
    html = client.get("/connectors/").content.decode()
    assert f"1–{PAGE_SIZE} of {COUNT}." in html
    assert 'href="?page=2">Next ›</a>' in html
    assert 'href="?page=3">Last »</a>' in html


def test_later_pages_continue_in_order(view_only: User, connectors: list[str]) -> None:
    client = logged_in(view_only)
    assert table_names(client, "/connectors/?page=2") == connectors[PAGE_SIZE : PAGE_SIZE * 2]
    assert table_names(client, "/connectors/?page=3") == connectors[PAGE_SIZE * 2 :]


def test_a_column_sorts_the_whole_list_not_the_page(view_only: User, connectors: list[str]) -> None:
    client = logged_in(view_only)
    newest_first = list(reversed(connectors))
    assert table_names(client, "/connectors/?sort=name&dir=desc") == newest_first[:PAGE_SIZE]
    assert (
        table_names(client, "/connectors/?sort=name&dir=desc&page=2")
        == newest_first[PAGE_SIZE : PAGE_SIZE * 2]
    )
    # Enabled ascending: the disabled ones (the odd numbers) first, ties by id.
    disabled = [name for n, name in enumerate(connectors) if n % 2]
    assert table_names(client, "/connectors/?sort=enabled") == disabled[:PAGE_SIZE]


def test_sort_links_keep_the_search_and_start_again_at_the_first_page(
    view_only: User, connectors: list[str]
) -> None:
    html = logged_in(view_only).get("/connectors/?q=conn-00&page=1").content.decode()
    assert 'href="?q=conn-00&amp;sort=name&amp;dir=asc"' in html


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=4",
        "page=999999999999999999999",
        "page=two",
        "page=",
        "sort=password",
        "sort=name__secret",
        "sort=-name",
        "dir=sideways",
        "size=7",
        "size=1000000",
        "size=abc",
        "q=" + "x" * 5000 + "&page=2",
    ],
)
def test_bad_parameters_give_the_first_page(
    view_only: User, connectors: list[str], query: str
) -> None:
    names = table_names(logged_in(view_only), f"/connectors/?{query}")
    if query.startswith("q="):
        assert names == []  # nothing matches, and no error
    else:
        assert names == connectors[:PAGE_SIZE]


def test_a_page_size_of_the_offered_ones_is_used(view_only: User, connectors: list[str]) -> None:
    assert table_names(logged_in(view_only), "/connectors/?size=25") == connectors[:25]


def test_the_search_finds_across_all_pages(view_only: User, connectors: list[str]) -> None:
    client = logged_in(view_only)
    assert table_names(client, f"/connectors/?q={connectors[-1]}") == [connectors[-1]]
    assert table_names(client, "/connectors/?q=CONN-010") == connectors[100:110]
    html = client.get("/connectors/?q=nothing-like-it").content.decode()
    assert "Nothing matches “nothing-like-it”." in html


def test_the_list_queries_one_page_of_rows(view_only: User, connectors: list[str]) -> None:
    client = logged_in(view_only)
    client.get("/connectors/")
    with CaptureQueriesContext(connection) as captured:
        client.get("/connectors/")
    selects = [q["sql"] for q in captured if 'FROM "connectors_connector"' in q["sql"]]
    assert any("COUNT(" in sql for sql in selects)
    assert all("LIMIT" in sql or "COUNT(" in sql for sql in selects), selects


def test_mailboxes_are_paged_and_searched(view_only: User) -> None:
    domain = AcceptedDomain.objects.create(domain="example.com")
    Mailbox.objects.bulk_create(
        Mailbox(address=f"user{n:04d}@example.com", domain=domain) for n in range(COUNT)
    )
    client = logged_in(view_only)
    html = client.get("/servers/mailboxes/").content.decode()
    assert f"1–{PAGE_SIZE} of {COUNT}." in html
    html = client.get("/servers/mailboxes/?q=user0110").content.decode()
    assert "user0110@example.com" in html and "user0111@example.com" not in html


def test_the_routing_groups_count_servers_and_connectors(
    view_only: User, connectors: list[str]
) -> None:
    group = RoutingGroup.first()
    other = RoutingGroup.objects.create(name="Other Group")
    for n in range(3):
        Server.objects.create(name=f"s{n}", routing_group=group)
    Server.objects.create(name="lone", routing_group=other)
    html = logged_in(view_only).get("/connectors/routing-groups/?sort=connector_count")
    rows = re.findall(
        r"<tr><td><a [^>]+>([^<]+)</a></td><td>(\d+)</td><td>(\d+)</td>", html.content.decode()
    )
    assert rows == [("Other Group", "1", "0"), (group.name, "3", str(COUNT))]


def test_a_delete_confirmation_shows_the_first_of_many_dependents(
    administrator: User, connectors: list[str]
) -> None:
    server = Server.objects.create(name="mx", routing_group=RoutingGroup.first())
    vs = VirtualServer.objects.create(server=server, name="Listener", port=25)
    for connector in Connector.objects.all():
        connector.bridgeheads.add(vs)
    html = logged_in(administrator).get(f"/servers/virtual-servers/{vs.pk}/delete/")
    text = html.content.decode()
    assert len(re.findall(r"<li>[^<]*conn-\d+ \(bridgehead\)</li>", text)) == SHOWN_ON_DELETE
    assert f"<li>… and {COUNT - SHOWN_ON_DELETE} more</li>" in text
