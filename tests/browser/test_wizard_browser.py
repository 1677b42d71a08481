"""The Internet Mail Wizard in a real browser: from the tree through every step (choosing the
server narrows the virtual servers without a reload, a bad smart host is shown at its field),
the summary (saved as docs/screenshots/internet-mail-wizard.png), Finish, and the new connector
in the tree; a View Only administrator neither sees nor opens it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from connectors.models import Connector
from servers.models import AcceptedDomain, Server
from tests.browser.ui import heading, pane, tree_link
from tests.servers.console_world import World

pytestmark = pytest.mark.browser

WIZARD = "/connectors/internet-mail-wizard/"


def step_heading(page: Page) -> str:
    return pane(page).get_by_role("heading", level=2).inner_text()


def press(page: Page, name: str) -> None:
    with page.expect_navigation():
        pane(page).get_by_role("button", name=name, exact=True).click()


def test_an_administrator_sets_up_internet_mail_with_the_wizard(
    logged_in_page: Callable[..., Page],
    administrator: User,
    world: World,
    screenshot: Callable[[Page, str], Path],
) -> None:
    Server.objects.filter(pk=world.server.pk).update(last_seen=timezone.now())
    page = logged_in_page(administrator)
    tree_link(page, "Internet Mail Wizard").click()
    expect(heading(page)).to_have_text("Internet Mail Wizard")
    expect(pane(page).get_by_role("heading", level=2)).to_have_text(
        "Step 1 of 6: Server and virtual server"
    )

    # Choosing the server asks for its virtual servers (htmx) and keeps the page.
    page.get_by_label("Server:", exact=True).select_option(label="mx1")
    virtual_servers = page.get_by_label("SMTP virtual server")
    expect(virtual_servers.locator("option")).to_contain_text(["Default SMTP Virtual Server"])
    virtual_servers.select_option(label=f"Default SMTP Virtual Server on mx1, {_binding(world)}")
    press(page, "Next ›")

    assert step_heading(page) == "Step 2 of 6: Send, receive or both"
    page.get_by_label("Send and receive Internet mail").check()
    press(page, "Next ›")

    assert step_heading(page) == "Step 3 of 6: Accepted domains"
    page.get_by_role("textbox", name="Domains to receive mail for:").fill(
        "example.com\nexample.org"
    )
    press(page, "Next ›")

    assert step_heading(page) == "Step 4 of 6: Outbound connector"
    expect(page.get_by_role("textbox", name="Connector name:")).to_have_value(
        "Internet Mail Connector"
    )
    page.get_by_label("Forward all mail through smart hosts").check()
    page.get_by_role("textbox", name="Smart hosts:").fill("192.0.2.25")
    press(page, "Next ›")
    smart_hosts = pane(page).locator("#field-smart_hosts")
    expect(smart_hosts.locator(".errorlist")).to_contain_text("put IP addresses in brackets")
    page.get_by_role("textbox", name="Smart hosts:").fill("[192.0.2.25]")
    press(page, "Next ›")

    assert step_heading(page) == "Step 5 of 6: Relay check"
    expect(pane(page).locator(".relay-verdict")).to_contain_text("Relay stays closed")
    press(page, "Next ›")

    assert step_heading(page) == "Step 6 of 6: Summary"
    summary = pane(page).locator("table.wizard-summary")
    expect(summary.get_by_role("row", name="Create Accepted domain example.org")).to_be_visible()
    expect(summary.get_by_role("row", name="Keep Accepted domain example.com")).to_be_visible()
    connector_row = summary.get_by_role("row", name="Create SMTP connector Internet Mail Connector")
    expect(connector_row).to_contain_text("[192.0.2.25]")
    expect(pane(page).locator(".wizard-notes")).to_contain_text("listens on port 2525")
    assert not Connector.objects.filter(name="Internet Mail Connector").exists()
    screenshot(page, "internet-mail-wizard")

    press(page, "Finish")
    expect(pane(page).get_by_role("heading", level=2)).to_have_text("Internet mail is set up")
    expect(tree_link(page, "Internet Mail Connector")).to_be_visible()
    connector = Connector.objects.get(name="Internet Mail Connector")
    assert connector.smart_hosts == "[192.0.2.25]" and not connector.use_dns
    assert list(connector.bridgeheads.all()) == [world.virtual_server]
    assert AcceptedDomain.objects.filter(domain="example.org").exists()


def test_a_view_only_administrator_has_no_wizard(
    logged_in_page: Callable[..., Page],
    console_url: Callable[[str], str],
    view_only: User,
    world: World,
) -> None:
    page = logged_in_page(view_only)
    expect(tree_link(page, "Routing Simulator")).to_be_visible()
    expect(tree_link(page, "Internet Mail Wizard")).to_have_count(0)
    response = page.goto(console_url(WIZARD))
    assert response is not None and response.status == 403


def _binding(world: World) -> str:
    world.virtual_server.refresh_from_db()
    return world.virtual_server.binding
