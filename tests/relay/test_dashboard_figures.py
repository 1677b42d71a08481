"""The dashboard's figures (the fragment htmx reloads): every role reads it, an expired login
sends the window to the login page; the time span selector; each figure links to Queue Viewer
or the Tracking Center filtered to it; the ten largest link queues with their last error; the
servers' heartbeat state; the oldest message waiting."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay.dashboard import QUEUE_DEPTH
from relay.metrics import DELIVERIES, RECEIVED
from relay.models import LinkQueue, Message, QueueEntry
from servers.models import Server
from tests.relay.dashboard_world import WriteCounts, make_virtual_server
from tests.relay.queue_world import Queues, deliver, entry, fail, html_of, logged_in

pytestmark = pytest.mark.django_db

FIGURES = "/dashboard/figures/"


def figures(user: User, query: str = "") -> str:
    response = logged_in(user).get(FIGURES + query, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return html_of(response)


def section(html: str, css_class: str) -> str:
    start = html.index(f'<section class="panel {css_class}"')
    return html[start : html.index("</section>", start)]


def link_of(html: str, figure: str) -> tuple[str, dict[str, list[str]]]:
    href = re.search(rf'<a href="([^"]+)" data-figure="{figure}">', html)
    assert href is not None, figure
    parts = urlsplit(href.group(1).replace("&amp;", "&"))
    return parts.path, parse_qs(parts.query)


@pytest.mark.parametrize("who", ["view_only", "administrator", "full_admin"])
def test_every_role_reads_the_figures_without_the_console_around_them(
    who: str, request: pytest.FixtureRequest
) -> None:
    html = figures(request.getfixturevalue(who))
    assert html.lstrip().startswith('<div id="dashboard-figures"')
    assert 'role="tree"' not in html and "<html" not in html


def test_no_role_is_refused_and_an_anonymous_page_load_goes_to_the_login(outsider: User) -> None:
    assert logged_in(outsider).get(FIGURES).status_code == 403
    response = Client().get(FIGURES)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_refresh_after_the_login_expired_sends_the_window_to_the_login_page() -> None:
    response = Client().get(FIGURES, headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=/"


@pytest.mark.parametrize(
    ("query", "hours", "label"),
    [
        ("", 1, "1 hour"),
        ("?hours=6", 6, "6 hours"),
        ("?hours=24", 24, "24 hours"),
        ("?hours=7", 1, "1 hour"),
    ],
)
def test_the_time_span_selector(
    view_only: User, counts: WriteCounts, query: str, hours: int, label: str
) -> None:
    counts(RECEIVED, {30: 1, 5 * 60: 10, 20 * 60: 100}, {"virtual_server": "Default"})
    html = figures(view_only, query)
    expected = {1: 1, 6: 11, 24: 111}[hours]
    assert f"Received: <strong>{expected}</strong>" in html
    assert f'aria-current="true">{label}</a>' in html
    assert f'hx-get="/dashboard/figures/?hours={hours}"' in html
    assert f"(last {label}, one point a minute)" in html
    assert len(re.findall(r'<a class="button[^"]*" href="\?hours=(1|6|24)"', html)) == 3


def test_the_flow_figures_link_to_the_tracking_center_for_their_event_and_span(
    view_only: User, counts: WriteCounts
) -> None:
    counts(DELIVERIES, {3: 2}, {"connector": "Internet", "result": "deferred"})
    html = figures(view_only, "?hours=6")
    start = timezone.localtime(timezone.now() - timedelta(minutes=6 * 60 - 1))
    for flow in ("received", "delivered", "deferred", "failed"):
        path, query = link_of(html, flow)
        assert path == "/relay/tracking/"
        assert query["kind"] == [flow]
        (since,) = query["since"]
        shown = datetime.fromisoformat(since)
        assert abs(shown - start.replace(tzinfo=None)) < timedelta(minutes=2)
    assert "Deferred: <strong>2</strong>" in html
    assert 'class="line line-deferred"' in html


def test_a_flow_link_finds_the_events_in_the_tracking_center(
    view_only: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    path, query = link_of(figures(view_only), "received")
    found = html_of(logged_in(view_only).get(path, query))
    assert message.queue_id in found


def test_queue_depth_shows_the_last_sample_and_links_to_queue_viewer(
    view_only: User, counts: WriteCounts
) -> None:
    html = section(figures(view_only), "depth")
    assert "not sampled yet" in html
    counts(QUEUE_DEPTH, {2: 7, 1: 12})
    html = section(figures(view_only), "depth")
    assert "Waiting now: <strong>12</strong>" in html
    assert link_of(html, "queue_depth") == ("/relay/queues/", {})
    assert 'class="line line-queue_depth"' in html


def test_the_ten_destinations_with_the_most_waiting_mail_largest_first(
    view_only: User, queues: Queues
) -> None:
    # Domain d<n> gets n messages: d1 .. d12; the ten largest are d12 .. d3.
    for n in range(1, 13):
        for _ in range(n):
            queues.send([f"user@d{n:02d}.example"])
    first = Message.objects.filter(recipients__domain="d12.example").order_by("pk").first()
    assert first is not None
    fail(entry(first), "451 4.7.1 Greylisted, try again later")
    html = section(figures(view_only), "destinations")
    names = re.findall(r'<td><a href="/relay/queues/\d+/">([^<]+)</a></td>', html)
    assert names == [f"d{n:02d}.example" for n in range(12, 2, -1)]
    d12 = LinkQueue.objects.get(name="d12.example")
    row = re.search(rf'<tr><td><a href="/relay/queues/{d12.pk}/">.*?</tr>', html, re.S)
    assert row is not None
    assert f'<a href="/relay/find/?queue={d12.pk}">12</a>' in row.group(0)
    assert "451 4.7.1 Greylisted, try again later" in row.group(0)
    assert "Retry" in row.group(0) or "Ready" in row.group(0)


def test_delivered_mail_leaves_the_destinations_and_the_oldest(
    view_only: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    deliver(entry(message))
    html = figures(view_only)
    assert "No mail is waiting." in section(html, "destinations")
    assert "No mail is waiting." in section(html, "oldest")


def test_the_oldest_message_waiting_links_to_its_properties_history_and_queue(
    view_only: User, queues: Queues
) -> None:
    old = queues.send(["a@example.org"], received_at=timezone.now() - timedelta(hours=3, minutes=5))
    queues.send(["b@example.net"])
    html = section(figures(view_only), "oldest")
    assert link_of(html, "oldest") == (f"/relay/messages/{old.pk}/", {})
    assert ">3 h 5 min</a>" in html
    assert f'href="/relay/tracking/history/?queue_id={old.queue_id}"' in html
    queue = QueueEntry.objects.get(message=old).queue
    assert f'href="/relay/queues/{queue.pk}/">example.org</a>' in html


def test_servers_show_their_heartbeat_state_as_the_server_sheets_do(
    view_only: User, server_with_heartbeat: Any, settings: Any
) -> None:
    settings.SMTPADMIN_HEARTBEAT_TIMEOUT = 60
    alive = server_with_heartbeat("mx-alive", 20)
    silent = server_with_heartbeat("mx-silent", 90)
    server_with_heartbeat("mx-new", None)
    make_virtual_server(alive, 25, "running")
    make_virtual_server(alive, 587, "running", desired="paused")
    make_virtual_server(silent, 25, "stopped", desired="stopped")
    html = section(figures(view_only), "servers")

    def row(name: str) -> str:
        found = re.search(rf'<tr data-server="{name}">.*?</tr>', html, re.S)
        assert found is not None
        return found.group(0)

    assert '<span class="status status-running">Running</span>' in row("mx-alive")
    assert "20 s ago" in row("mx-alive")
    assert "running → paused" in row("mx-alive")
    assert '<span class="status status-not_responding">Not responding</span>' in row("mx-silent")
    assert "1 min ago" in row("mx-silent")
    assert '<span class="status status-stopped">stopped</span>' in row("mx-silent")
    assert '<span class="status status-never_seen">Never seen</span>' in row("mx-new")
    assert f'href="/servers/{alive.pk}/">mx-alive</a>' in row("mx-alive")
    assert 'href="/relay/tracking/?server=mx-alive&amp;since=' in row("mx-alive")
    assert "after 60 s without a heartbeat" in html
    settings.SMTPADMIN_HEARTBEAT_TIMEOUT = 120
    assert (
        "status-running"
        in section(figures(view_only), "servers")
        .split('data-server="mx-silent"')[1]
        .split("</tr>")[0]
    )
    assert Server.objects.count() == 3


def test_the_figures_cost_the_same_queries_however_much_mail_waits(
    view_only: User, queues: Queues, server_with_heartbeat: Any
) -> None:
    client = logged_in(view_only)
    queues.send(["a@d00.example"])

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(FIGURES + "?hours=24").status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    few = queries()
    for n in range(1, 15):
        queues.send([f"user{k}@d{n:02d}.example" for k in range(3)])
    for n in range(4):
        server = server_with_heartbeat(f"mx{n}", 10 * n)
        make_virtual_server(server, 25, "running")
        make_virtual_server(server, 587, "paused", desired="paused")
    many = queries()
    assert len(many) == len(few)
    # The per-minute figures come from the counters: no query reads the messages but for
    # the ten queues' oldest and the single oldest message, by their keys.
    reading_messages = [q for q in many if '"relay_message"' in q]
    assert len(reading_messages) <= 2, reading_messages
