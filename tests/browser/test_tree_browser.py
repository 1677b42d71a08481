"""The tree's large containers in a browser: a closed Connectors container loads its
connectors when its twisty is pressed (htmx, under the strict CSP), shows the first ones and
"More…", and a picker with many virtual servers finds one by typing."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from connectors.models import Connector
from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.navigation import BRANCH_LIMIT
from smtpadmin.pickers import PICKER_LIMIT
from tests.browser.ui import heading, pane, press_ok, tabpanel, tree_item, tree_link
from tests.servers.console_world import World

LoggedIn = Callable[..., Page]


def test_opening_the_connectors_container_loads_its_first_connectors(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    group = RoutingGroup.first()
    Connector.objects.bulk_create(
        Connector(name=f"c{n:03d}", routing_group=group) for n in range(BRANCH_LIMIT + 10)
    )
    page = logged_in_page(administrator)
    container = tree_item(page, "Connectors")
    expect(container).to_have_attribute("aria-expanded", "false")
    expect(tree_link(page, "c000")).to_have_count(0)  # not even in the page yet

    container.get_by_role("button", name="Expand or collapse").click()
    expect(container).to_have_attribute("aria-expanded", "true")
    expect(tree_link(page, "c000")).to_be_visible()
    expect(tree_link(page, f"c{BRANCH_LIMIT - 1:03d}")).to_be_visible()
    expect(tree_link(page, f"c{BRANCH_LIMIT:03d}")).to_have_count(0)

    # Closing and opening again shows the same, without asking twice.
    container.get_by_role("button", name="Expand or collapse").click()
    expect(tree_link(page, "c000")).to_be_hidden()
    container.get_by_role("button", name="Expand or collapse").click()
    expect(tree_link(page, "c000")).to_have_count(1)

    tree_link(page, "More…").click()
    expect(heading(page)).to_have_text("Connectors of First Routing Group")
    last = f"c{BRANCH_LIMIT + 9:03d}"  # the container's page lists the ones the tree does not
    expect(pane(page).get_by_role("link", name=last, exact=True)).to_be_visible()


def test_a_bridgehead_is_found_by_typing_and_saved(
    logged_in_page: LoggedIn,
    console_url: Callable[[str], str],
    administrator: User,
    world: World,
) -> None:
    group = RoutingGroup.first()
    servers = Server.objects.bulk_create(
        Server(name=f"node-{n:02d}", routing_group=group) for n in range(PICKER_LIMIT // 10 + 1)
    )
    VirtualServer.objects.bulk_create(
        VirtualServer(server=servers[n // 10], name=f"vs-{n:04d}", port=2000 + n % 10)
        for n in range(PICKER_LIMIT + 5)
    )
    connector = Connector.objects.create(name="Partner", routing_group=group)
    connector.bridgeheads.set([world.virtual_server])
    connector.address_spaces.create(domain="partner.example", cost=1)

    page = logged_in_page(administrator)
    page.goto(console_url(f"/connectors/{connector.pk}/"))
    general = tabpanel(page, "General")
    expect(general.get_by_role("checkbox", name=re.compile("^vs-"))).to_have_count(0)
    general.get_by_role("searchbox", name="Find more to choose").fill("vs-0042")
    found = general.get_by_role("checkbox", name="vs-0042 (node-04)")
    expect(found).to_be_visible()
    found.check()
    press_ok(page)

    expect(pane(page).locator(".messages")).to_contain_text("Saved")
    names = sorted(connector.bridgeheads.values_list("name", flat=True))
    assert names == ["Default SMTP Virtual Server", "vs-0042"]
