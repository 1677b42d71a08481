"""Browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's
``live_server``.

Fixtures (the names are stable; other browser test modules use them):

``browser`` (package scope)
    A headless Chromium (``/usr/bin/chromium``, never ``playwright install``), started once for
    all of ``tests/browser`` and stopped after its last test. While it runs, Playwright's sync API
    keeps an asyncio loop running on the main thread, so Django's "async unsafe" guard is lifted
    for that time only (the tests' own ORM calls run on the main thread). That loop is also why
    the scope is the package and not the session: the tests after ``tests/browser`` (asyncio
    ones among them) must not find it running. Without Chromium the tests skip, or fail when
    ``SMTPADMIN_REQUIRE_BROWSER=1`` (CI sets it).

``console_url``
    ``console_url("/servers/")`` -> the absolute URL on the live server. Requesting it starts
    the live server and makes the test's database transactional, so rows created in the test
    (the people fixtures of ``tests/conftest.py``: ``full_admin``, ``administrator``,
    ``view_only``, ``outsider``; ``world``) are visible to the server thread.

``new_page``
    ``new_page(width=1280, height=800)`` -> a fresh ``Page`` in its own browser context (its
    own cookies), not logged in. Contexts are closed after the test.

``logged_in_page``
    ``logged_in_page(user, width=1280, height=800)`` -> a ``Page`` logged in as ``user``
    through the login form (real CSRF token, password ``tests.conftest.PASSWORD``), showing the
    dashboard (the console tree on the left).

``world``
    A small organization (``tests.servers.console_world.build_world``): server ``mx1`` with a
    virtual server on port 2525, accepted domain ``example.com`` with a mailbox, a credential,
    a certificate.

``screenshot``
    ``screenshot(page, "name")`` saves ``docs/screenshots/name.png`` (the viewport) for the
    README; the file is rewritten only when its bytes change.

Helpers to find what a page shows (the tree, the pane's heading, tabs, facts) are in
``tests/browser/ui.py``.

Every test under ``tests/browser`` is marked ``browser`` (``pytest -m "not browser"`` skips
them). Playwright's default timeout is lowered to 10 s so a broken page fails quickly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import PASSWORD
from tests.servers.console_world import World, build_world

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("SMTPADMIN_REQUIRE_BROWSER", "") not in ("", "0")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 10_000
BROWSER_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BROWSER_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (SMTPADMIN_REQUIRE_BROWSER is set, so this is an error)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # Playwright gives each launch a fresh, empty profile directory (--user-data-dir).
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def console_url(live_server: Any) -> Callable[[str], str]:
    base = live_server.url.rstrip("/")

    def url(path: str = "/") -> str:
        return base + (path if path.startswith("/") else "/" + path)

    return url


@pytest.fixture
def new_page(browser: Browser, console_url: Callable[[str], str]) -> Iterator[Callable[..., Page]]:
    contexts: list[BrowserContext] = []

    def make(width: int = 1280, height: int = 800) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def log_in(page: Page, console_url: Callable[[str], str], user: User) -> None:
    """Fill the login form the way a person does (the page carries the real CSRF token)."""
    page.goto(console_url("/"))  # anonymous: redirected to the login form
    page.get_by_label("User name").fill(user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    expect(page.get_by_role("navigation", name="Console tree").get_by_role("tree")).to_be_visible()
    expect(page.locator(".topbar .user")).to_have_text(user.get_username())


@pytest.fixture
def logged_in_page(
    new_page: Callable[..., Page], console_url: Callable[[str], str]
) -> Callable[..., Page]:
    def make(user: User, width: int = 1280, height: int = 800) -> Page:
        page = new_page(width, height)
        log_in(page, console_url, user)
        return page

    return make


@pytest.fixture
def world(transactional_db: Any) -> World:
    return build_world()


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    def save(page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOTS / f"{name}.png"
        page.evaluate("() => document.activeElement?.blur()")  # no focus ring in the picture
        page.mouse.move(0, 0)
        png = page.screenshot(animations="disabled", caret="hide")
        if not target.exists() or target.read_bytes() != png:
            target.write_bytes(png)
        return target

    return save
