"""The README's screenshots (docs/screenshots/*.png), taken from a small but lively organization:
two servers (one answering, one silent), virtual servers running and paused, an Internet
connector and a partner reached by smart host with a backup at a higher cost on a business-hours
schedule, and a few changes in the audit log. Every run retakes them; a PNG is rewritten only
when its pixels change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from connectors.models import AddressSpace, Connector, ScheduleMode
from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry
from smtpadmin.validators import SCHEDULE_SLOTS_PER_DAY
from tests.browser.ui import fact, heading, open_tab, pane, press_ok, tree_link
from tests.servers.console_world import World

pytestmark = pytest.mark.browser

Shoot = Callable[[Page, str], Path]


def business_hours() -> str:
    """Monday to Friday, 07:00-19:00, as the 672 quarter hours of the schedule grid."""
    day = "".join("1" if 7 * 4 <= q < 19 * 4 else "0" for q in range(SCHEDULE_SLOTS_PER_DAY))
    off = "0" * SCHEDULE_SLOTS_PER_DAY
    return day * 5 + off * 2


# Times shown in the pictures are fixed, so that retaking them changes no pixel.
SHOWN_TIME = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def lively_organization(world: World) -> None:
    now = timezone.now()
    Server.objects.filter(pk=world.server.pk).update(last_seen=now, version="0.1.0")
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(
        state="running", state_changed_at=SHOWN_TIME
    )
    submission = VirtualServer.objects.create(
        server=world.server, name="Submission", port=587, desired_state="paused"
    )
    VirtualServer.objects.filter(pk=submission.pk).update(
        state="paused", state_changed_at=SHOWN_TIME
    )
    mx2 = Server.objects.create(
        name="mx2",
        fqdn="mx2.example.com",
        routing_group=RoutingGroup.first(),
        last_seen=now - timedelta(hours=2),
    )
    VirtualServer.objects.create(server=mx2, port=25)

    group = RoutingGroup.first()
    connectors = [
        ("Internet", [("*", 10)], {}),
        (
            "Partner primary",
            [("partner.example", 1), ("*.partner.example", 1), ("partner-mail.test", 5)],
            {"use_dns": False, "smart_hosts": "relay.partner.example:587"},
        ),
        (
            "Partner backup",
            [("partner.example", 20)],
            {
                "use_dns": False,
                "smart_hosts": "[192.0.2.25]",
                "schedule_mode": ScheduleMode.CUSTOM,
                "schedule_grid": business_hours(),
            },
        ),
    ]
    for name, spaces, fields in connectors:
        connector = Connector.objects.create(name=name, routing_group=group, **fields)
        connector.bridgeheads.set([world.virtual_server])
        for domain, cost in spaces:
            AddressSpace.objects.create(connector=connector, domain=domain, cost=cost)


def test_screenshots_of_the_main_screens(
    logged_in_page: Callable[..., Page], full_admin: User, world: World, screenshot: Shoot
) -> None:
    lively_organization(world)
    page = logged_in_page(full_admin)

    # A few changes through the console, for the audit log.
    tree_link(page, "Default SMTP Virtual Server").first.click()
    access = open_tab(page, "Access")
    relay = access.get_by_role("group", name="Relay restrictions")
    relay.get_by_role("radio", name="Only the list below").check()
    relay.get_by_role("textbox", name="Computers:").fill("192.0.2.0/24\n198.51.100.7")
    messages = open_tab(page, "Messages")
    messages.get_by_label("Limit message size to (KB)").fill("10240")
    press_ok(page)
    expect(pane(page).locator(".messages")).to_contain_text("Saved")
    tree_link(page, "Internet").click()
    open_tab(page, "Address Space").get_by_label("Cost").first.fill("50")
    press_ok(page)
    expect(pane(page).locator(".messages")).to_contain_text("Saved")
    tree_link(page, "SMTP").nth(1).click()
    expect(heading(page)).to_have_text("SMTP (mx2)")
    with page.expect_navigation():
        pane(page).get_by_role("row").nth(1).get_by_role("button", name="Stop").click()
    expect(pane(page).locator(".messages")).to_contain_text("stopped requested")
    for minutes, entry in enumerate(AuditEntry.objects.order_by("id")):
        AuditEntry.objects.filter(pk=entry.pk).update(at=SHOWN_TIME + timedelta(minutes=minutes))

    tree_link(page, "First Organization").click()
    expect(heading(page)).to_have_text("Message Delivery Properties")
    screenshot(page, "organization")

    tree_link(page, "SMTP").first.click()
    expect(heading(page)).to_have_text("SMTP (mx1)")
    screenshot(page, "smtp-virtual-servers")

    tree_link(page, "Default SMTP Virtual Server").first.click()
    expect(fact(page, "Actual state")).to_have_text("running")
    open_tab(page, "Access")
    screenshot(page, "virtual-server-access")

    tree_link(page, "Connectors").click()
    expect(heading(page)).to_have_text("Connectors of First Routing Group")
    screenshot(page, "connectors")

    tree_link(page, "Partner primary").click()
    open_tab(page, "Address Space")
    screenshot(page, "connector-address-space")

    tree_link(page, "Partner backup").click()
    options = open_tab(page, "Delivery Options")
    expect(options.get_by_label("Connection time:", exact=True)).to_have_value("custom")
    options.locator("[data-schedule]").first.scroll_into_view_if_needed()
    screenshot(page, "connector-schedule")

    tree_link(page, "Routing Simulator").click()
    page.get_by_label("Sender:").fill("alice@example.com")
    page.get_by_label("Recipient:").fill("bob@partner.example")
    page.get_by_label("Size (KB):").fill("300")
    page.get_by_role("button", name="Simulate").click()
    expect(page.get_by_role("heading", name="Route for bob@partner.example")).to_be_visible()
    screenshot(page, "routing-simulator")

    tree_link(page, "Audit Log").click()
    expect(pane(page).get_by_role("row").filter(has_text="relay_list")).to_be_visible()
    screenshot(page, "audit-log")

    narrow = logged_in_page(full_admin, width=390, height=844)
    tree_link(narrow, "Default SMTP Virtual Server").first.click()
    expect(heading(narrow)).to_have_text("Default SMTP Virtual Server Properties")
    screenshot(narrow, "narrow")
    narrow.get_by_role("button", name="☰").click()
    expect(narrow.get_by_role("navigation", name="Console tree")).to_be_hidden()
    screenshot(narrow, "narrow-tree-hidden")
