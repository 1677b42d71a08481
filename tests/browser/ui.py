"""What a console page shows, found the way a person finds it: the tree by its labels, the
pane's heading, a property sheet's tabs by name (and whether they are open), the facts above the
tabs. Shared by the browser tests."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect


def tree(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Console tree")


def tree_link(page: Page, label: str) -> Locator:
    return tree(page).get_by_role("link", name=label, exact=True)


def tree_item(page: Page, label: str) -> Locator:
    """The tree item whose own row shows ``label`` (a link or a plain label)."""
    return (
        tree(page)
        .locator(".row")
        .get_by_text(label, exact=True)
        .locator("xpath=ancestor::li[@role='treeitem'][1]")
    )


def pane(page: Page) -> Locator:
    return page.get_by_role("main")


def heading(page: Page) -> Locator:
    return pane(page).get_by_role("heading", level=1)


def tab_name(name: str) -> re.Pattern[str]:
    """A tab's accessible name: its title, then " ⚠" when a field on it has an error."""
    return re.compile(rf"^{re.escape(name)}( ⚠)?$")


def tab(page: Page, name: str) -> Locator:
    return page.get_by_role("tab", name=tab_name(name))


def tabpanel(page: Page, name: str) -> Locator:
    return page.get_by_role("tabpanel", name=tab_name(name))


def open_tab(page: Page, name: str) -> Locator:
    tab(page, name).click()
    expect(tab(page, name)).to_have_attribute("aria-selected", "true")
    panel = tabpanel(page, name)
    expect(panel).to_be_visible()
    return panel


def fact(page: Page, label: str) -> Locator:
    """The value next to ``label`` in the facts above a sheet's tabs."""
    return (
        pane(page)
        .locator("dl.facts dt", has_text=re.compile(f"^{label}$"))
        .locator("xpath=following-sibling::dd[1]")
    )


def press_ok(page: Page) -> None:
    with page.expect_navigation():
        pane(page).get_by_role("button", name="OK", exact=True).click()
