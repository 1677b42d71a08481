"""The console under its Content-Security-Policy in a real browser: walking the main pages,
switching tabs, folding the tree, drag-selecting the connector schedule grid, Swagger UI and the
browsable API must not cause a single CSP violation (which would mean a script, a handler or a
style the browser refused, and a page that silently does less)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import ConsoleMessage, Page, expect

from connectors.models import AddressSpace, Connector
from relay.models import ReplyRule
from servers.models import RoutingGroup
from tests.browser.ui import heading, open_tab, pane, tree_item, tree_link
from tests.servers.console_world import World
from tests.smtpadmin.test_api_permissions import make_queued_message

pytestmark = pytest.mark.browser

# Reports every violation to Python, on every page the tab opens.
LISTEN = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
    + ` at ${event.sourceFile || document.location.pathname}:${event.lineNumber}`);
});
"""


class Violations:
    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.expose_function("reportViolation", self._report)
        page.add_init_script(LISTEN)
        page.on("console", self._console)

    def _report(self, text: str) -> None:
        self.seen.append(text)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.seen.append(f"console: {message.text}")


@pytest.fixture
def watched_page(logged_in_page: Callable[..., Page]) -> Callable[..., tuple[Page, Violations]]:
    def make(user: User, width: int = 1280, height: int = 800) -> tuple[Page, Violations]:
        page = logged_in_page(user, width, height)
        return page, Violations(page)

    return make


def visit(page: Page, console_url: Callable[[str], str], path: str) -> None:
    response = page.goto(console_url(path))
    assert response is not None and response.status == 200, path
    page.wait_for_load_state("load")


def test_the_watcher_sees_a_violation(
    watched_page: Callable[..., tuple[Page, Violations]],
    console_url: Callable[[str], str],
    full_admin: User,
    world: World,
) -> None:
    page, violations = watched_page(full_admin)
    visit(page, console_url, "/servers/")
    page.evaluate(
        """() => document.body.insertAdjacentHTML(
            "beforeend", '<p style="color: red">styled</p><img src="x" onerror="1">')"""
    )
    page.wait_for_timeout(300)
    assert any("style-src" in v for v in violations.seen), violations.seen
    assert any("script-src" in v for v in violations.seen), violations.seen


def test_the_main_pages_run_without_a_csp_violation(
    watched_page: Callable[..., tuple[Page, Violations]],
    console_url: Callable[[str], str],
    full_admin: User,
    world: World,
) -> None:
    connector = Connector.objects.create(name="Partner", routing_group=RoutingGroup.first())
    connector.bridgeheads.set([world.virtual_server])
    AddressSpace.objects.create(connector=connector, domain="partner.example", cost=1)
    message = make_queued_message("example.net")
    queue = message.entries.get().queue
    rule = ReplyRule.objects.create(order=1, code="552", action=ReplyRule.Action.RETRY)
    page, violations = watched_page(full_admin)

    # The tree's twisty folds and opens a branch.
    servers = tree_item(page, "Servers")
    servers.get_by_role("button", name="Expand or collapse").first.click()
    expect(servers).to_have_attribute("aria-expanded", "false")
    servers.get_by_role("button", name="Expand or collapse").first.click()
    expect(servers).to_have_attribute("aria-expanded", "true")

    # A property sheet's tabs.
    tree_link(page, "Default SMTP Virtual Server").first.click()
    open_tab(page, "Access")
    open_tab(page, "General")

    # The connector's schedule: press on Monday 00:00, drag to 01:00, let go.
    tree_link(page, "Partner").click()
    options = open_tab(page, "Delivery Options")
    grid = options.locator("[data-schedule]").first
    grid.scroll_into_view_if_needed()
    first, last = grid.locator("input.slot[value='0']"), grid.locator("input.slot[value='4']")
    start, end = first.bounding_box(), last.bounding_box()
    assert start is not None and end is not None
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=8)
    page.mouse.up()
    for value in range(5):
        expect(grid.locator(f"input.slot[value='{value}']")).to_be_checked()
    expect(grid.locator("input.slot[value='5']")).not_to_be_checked()
    expect(options.get_by_label("Connection time:", exact=True)).to_have_value("custom")
    grid.get_by_role("button", name="None").click()
    expect(grid.locator("input.slot[value='0']")).not_to_be_checked()

    pages = [
        "/",
        "/servers/",
        f"/servers/{world.server.pk}/protocols/",
        f"/servers/virtual-servers/{world.virtual_server.pk}/sessions/",
        "/servers/accepted-domains/",
        f"/servers/mailboxes/{world.mailbox.pk}/",
        "/servers/smtp-credentials/",
        f"/servers/certificates/{world.certificate.pk}/",
        "/connectors/",
        "/connectors/routing-groups/",
        "/connectors/simulator/?sender=a%40example.com&recipient=b%40partner.example",
        "/connectors/internet-mail-wizard/",
        "/relay/queues/",
        f"/relay/queues/{queue.pk}/",
        f"/relay/messages/{message.pk}/",
        "/relay/find/",
        f"/relay/reply-rules/{rule.pk}/",
        "/relay/tracking/",
        "/administration/audit-log/",
        "/administration/users/",
        "/api/v1/servers/",
    ]
    for path in pages:
        visit(page, console_url, path)
    # Current Sessions refreshes itself through htmx.
    visit(page, console_url, f"/servers/virtual-servers/{world.virtual_server.pk}/sessions/")
    with page.expect_response(lambda r: "/sessions/" in r.url and r.request.method == "GET"):
        pass

    # Cancel on a delete confirmation goes back, without a javascript: URL.
    visit(page, console_url, "/servers/mailboxes/")
    visit(page, console_url, f"/servers/mailboxes/{world.mailbox.pk}/delete/")
    pane(page).get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(console_url("/servers/mailboxes/"))

    # Swagger UI starts from its script file and shows the API.
    visit(page, console_url, "/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("smtpadmin API")
    expect(page.locator(".opblock").first).to_be_visible()

    assert violations.seen == [], "\n".join(violations.seen)


def test_the_narrow_console_folds_its_tree_without_a_csp_violation(
    watched_page: Callable[..., tuple[Page, Violations]],
    console_url: Callable[[str], str],
    administrator: User,
    world: World,
) -> None:
    page, violations = watched_page(administrator, width=600, height=900)
    toggle = page.locator("[data-toggle-tree]")
    tree = page.get_by_role("navigation", name="Console tree")
    expect(tree).to_be_visible()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(tree).to_be_hidden()
    toggle.click()
    expect(tree).to_be_visible()
    tree_link(page, "Servers").click()
    expect(heading(page)).to_have_text("Servers")
    assert violations.seen == [], "\n".join(violations.seen)
