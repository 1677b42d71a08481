"""The dashboard in a real browser: the console opens on it, the charts are SVG, the figures
refresh themselves (htmx), nothing is refused by the CSP or logged as an error, a narrow screen
shows every panel without a horizontal scroll; and the README's screenshot of it."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from relay.dashboard import QUEUE_DEPTH, record_queue_depth
from relay.metrics import DELIVERIES, RECEIVED
from relay.queue.models import QueueEntry
from servers.models import RoutingGroup, Server, VirtualServer
from tests.browser.ui import heading, pane, tree_link
from tests.relay.dashboard_world import write_counts
from tests.relay.queue_world import Queues, entry, fail, make_queues

pytestmark = pytest.mark.browser


def traffic() -> None:
    """An hour of mail: a daytime wave received and delivered, a few deferrals and failures,
    and a queue that grew while a partner was greylisting."""
    now = timezone.now().timestamp()
    received, delivered, deferred, failed, depth = {}, {}, {}, {}, {}
    # Nothing in the hour's two oldest minutes: when a minute turns during the test, the one
    # leaving the window is empty and the totals the test compares stay the same.
    for ago in range(58):
        wave = 30 + 18 * math.sin(ago / 7) + (ago * 7) % 11
        received[ago] = round(wave)
        delivered[ago] = round(wave * 0.9)
        deferred[ago] = (ago * 5) % 7 if ago < 40 else 0
        failed[ago] = 1 if ago % 13 == 0 else 0
        depth[ago] = round(20 + 60 * math.sin(math.pi * ago / 58) + (ago * 3) % 5)
    write_counts(RECEIVED, received, {"virtual_server": "Inbound"}, now=now)
    write_counts(DELIVERIES, delivered, {"connector": "Internet", "result": "delivered"}, now=now)
    write_counts(DELIVERIES, deferred, {"connector": "Internet", "result": "deferred"}, now=now)
    write_counts(DELIVERIES, failed, {"connector": "Internet", "result": "failed"}, now=now)
    write_counts(QUEUE_DEPTH, {ago: n for ago, n in depth.items() if ago}, now=now)


def waiting_mail(queues: Queues) -> None:
    now = timezone.now()
    for n, domain in enumerate(("partner.example", "example.org", "example.net", "contoso.test")):
        for k in range(6 - n):
            queues.send([f"user{k}@{domain}"], received_at=now - timedelta(minutes=50 - k))
    for item in QueueEntry.objects.filter(queue__name="partner.example"):
        fail(entry(item.message), "451 4.7.1 Greylisted by partner.example, try again later")
    mx2 = Server.objects.create(
        name="node2", routing_group=RoutingGroup.first(), last_seen=now - timedelta(minutes=5)
    )
    VirtualServer.objects.create(server=mx2, name="Inbound", port=25)
    record_queue_depth()


@pytest.fixture
def lively(console_url: Callable[[str], str], tmp_path: Path) -> Queues:
    queues = make_queues(tmp_path)
    traffic()
    waiting_mail(queues)
    return queues


def test_the_console_opens_on_the_dashboard_with_its_charts(
    logged_in_page: Callable[..., Page],
    full_admin: User,
    lively: Queues,
    screenshot: Callable[[Page, str], Path],
    settings: Any,
) -> None:
    settings.SMTPADMIN_DASHBOARD_REFRESH_SECONDS = 1
    errors: list[str] = []
    page = logged_in_page(full_admin)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.reload()
    expect(heading(page)).to_have_text("Dashboard")
    expect(tree_link(page, "Dashboard")).to_have_attribute("aria-current", "page")
    flow = pane(page).locator("section.flow svg.chart-svg")
    expect(flow).to_be_visible()
    expect(flow.locator("path.line")).to_have_count(4)
    expect(pane(page).locator("section.depth svg path.line-queue_depth")).to_have_count(1)
    box = flow.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 100
    expect(pane(page).locator("section.destinations tbody tr").first).to_contain_text(
        "partner.example"
    )
    expect(pane(page).locator("section.destinations")).to_contain_text("Greylisted")
    expect(pane(page).locator("tr[data-server='node2']")).to_contain_text("Not responding")

    # The figures refresh themselves: a new count shows without reloading the page.
    received = pane(page).locator("[data-figure='received'] strong")
    before = int(received.inner_text())
    write_counts(RECEIVED, {0: 1000}, {"virtual_server": "Inbound"}, now=timezone.now().timestamp())
    expect(received).to_have_text(str(before + 1000), timeout=10_000)
    write_counts(
        RECEIVED, {0: -1000}, {"virtual_server": "Inbound"}, now=timezone.now().timestamp()
    )
    expect(received).to_have_text(str(before), timeout=10_000)

    # A figure leads to the page filtered to it.
    with page.expect_navigation():
        pane(page).locator("section.destinations tbody tr").first.get_by_role(
            "link", name="partner.example"
        ).click()
    expect(heading(page)).to_contain_text("Queue partner.example")
    page.go_back()
    expect(heading(page)).to_have_text("Dashboard")
    assert errors == []

    settings.SMTPADMIN_DASHBOARD_REFRESH_SECONDS = 30
    page.reload()
    expect(flow.locator("path.line")).to_have_count(4)
    screenshot(page, "dashboard")


def test_the_dashboard_fits_a_narrow_screen(
    logged_in_page: Callable[..., Page], view_only: User, lively: Queues
) -> None:
    page = logged_in_page(view_only, width=390, height=844)
    expect(heading(page)).to_have_text("Dashboard")
    for panel in ("flow", "depth", "destinations", "oldest", "servers"):
        section = pane(page).locator(f"section.{panel}")
        expect(section).to_be_visible()
        box = section.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, panel
    chart = pane(page).locator("section.flow svg.chart-svg").bounding_box()
    assert chart is not None and chart["width"] > 250
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390
