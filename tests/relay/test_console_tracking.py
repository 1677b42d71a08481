"""The Message Tracking Center in the console: search the events of every server (one row
per message, rejections apart), subjects only while subject logging is on, and a message's
history across servers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay.admin import actions
from relay.intake import record_rejected
from relay.models import Message, TrackingEvent
from tests.relay.queue_world import Queues, html_of, logged_in
from tests.relay.test_api_tracking import relayed_elsewhere
from tests.relay.test_intake import set_tracking

pytestmark = pytest.mark.django_db

CENTER = "/relay/tracking/"
HISTORY = "/relay/tracking/history/"


def result_rows(html: str) -> list[str]:
    table = html[html.index('class="list tracking-results"') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


def test_a_search_by_sender_lists_each_message_once_with_a_link_to_its_history(
    view_only: User, queues: Queues
) -> None:
    first = queues.send(["bob@example.org", "carol@example.org"])
    second = queues.send(["erin@example.net"])
    queues.send(["frank@example.org"], sender="someone@else.test")

    html = html_of(logged_in(view_only).get(CENTER, {"sender": "Sender@Outside.test"}))

    found = result_rows(html)
    assert len(found) == 2
    assert "2 messages" in html
    (row,) = [r for r in found if first.queue_id in r]
    assert f'href="{HISTORY}?queue_id={first.queue_id}"' in row
    assert "bob@example.org, carol@example.org" in row and ">node1<" in row
    assert second.queue_id in html
    assert "someone@else.test" not in html


def test_a_search_by_message_id_recipient_server_and_time(view_only: User, queues: Queues) -> None:
    old = queues.send(["bob@example.org"])
    TrackingEvent.objects.filter(queue_id=old.queue_id).update(
        at=timezone.now() - timedelta(days=3)
    )
    new = queues.send(["carol@example.org"])
    client = logged_in(view_only)

    def found(**query: str) -> set[str]:
        html = html_of(client.get(CENTER, query))
        return {q for q in (old.queue_id, new.queue_id) if q in html}

    assert found(message_id=old.message_id) == {old.queue_id}
    assert found(recipient="carol@example.org") == {new.queue_id}
    assert found(server="node1") == {old.queue_id, new.queue_id}
    assert found(server="node9") == set()
    since = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert found(since=since) == {new.queue_id}
    assert found(until=since) == {old.queue_id}


def test_subjects_can_be_searched_only_while_subject_logging_is_on(
    view_only: User, queues: Queues
) -> None:
    client = logged_in(view_only)
    set_tracking(subjects=False)
    queues.send(["bob@example.org"], subject="Secret merger")

    off = html_of(client.get(CENTER))
    assert 'name="subject"' not in off and "Subject logging is off" in off
    assert "Secret merger" not in html_of(client.get(CENTER, {"sender": "sender@outside.test"}))

    set_tracking(subjects=True)
    logged = queues.send(["carol@example.org"], subject="Quarterly figures")
    html = html_of(client.get(CENTER, {"subject": "quarterly"}))
    assert 'name="subject"' in html
    (row,) = result_rows(html)
    assert logged.queue_id in row and "Quarterly figures" in row


def test_rejections_are_listed_apart_from_messages(view_only: User, queues: Queues) -> None:
    record_rejected(
        virtual_server_id=queues.world.vs.pk,
        client_address="203.0.113.9",
        sender="spammer@bad.test",
        recipient="nobody@smtpadmin.test",
        reply="550 5.1.1 <nobody@smtpadmin.test>: Recipient address rejected",
    )

    html = html_of(logged_in(view_only).get(CENTER, {"sender": "spammer@bad.test"}))

    assert "Rejected during the SMTP dialogue" in html
    assert "203.0.113.9" in html and "550 5.1.1" in html
    assert "0 messages" in html


def test_the_search_takes_a_bounded_number_of_queries(view_only: User, queues: Queues) -> None:
    queues.send(["bob@example.org"])
    client = logged_in(view_only)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            client.get(CENTER, {"server": "node1"})
        return len(queries)

    count()
    few = count()
    for n in range(6):
        queues.send([f"u{n}@example.org", f"v{n}@example.net"])
    assert count() == few


def test_an_invalid_time_is_a_400_with_the_field_marked(view_only: User) -> None:
    response = logged_in(view_only).get(CENTER, {"since": "yesterday"})
    assert response.status_code == 400
    assert "has-error" in html_of(response)


def test_the_history_shows_every_event_across_servers_in_order(
    view_only: User, administrator: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net"])
    other = relayed_elsewhere(message, "node2", minutes=1)
    actions.delete_message(message, administrator, ndr=False)
    TrackingEvent.objects.filter(kind="deleted").update(at=timezone.now() + timedelta(minutes=5))

    html = html_of(logged_in(view_only).get(HISTORY, {"queue_id": message.queue_id.lower()}))

    table = html[html.index("<tbody>") : html.index("</tbody>")]
    events = re.findall(r"<tr><td[^>]*>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>", table)
    assert events == [
        ("Received", "node1"),
        ("Routed", "node1"),
        ("Routed", "node1"),
        ("Received", "node2"),
        ("Delivered", "node2"),
        ("Deleted by an administrator", "node1"),
        ("Deleted by an administrator", "node1"),
    ]
    assert "(by adam-admin)" in table
    assert f'href="/relay/messages/{message.pk}/"' in table
    assert other in table
    assert message.message_id.replace("<", "&lt;").replace(">", "&gt;") in html


def test_a_history_of_something_unknown_says_so(view_only: User, queues: Queues) -> None:
    client = logged_in(view_only)
    assert "No event of this message is recorded." in html_of(
        client.get(HISTORY, {"queue_id": "NOSUCHQUEUEID0"})
    )
    assert "Give a queue id." in html_of(client.get(HISTORY))
    response = client.get(HISTORY, {"queue_id": "a\x00b", "message_id": "\x00"})
    assert response.status_code == 200


def test_the_history_links_from_message_properties(view_only: User, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])
    html = html_of(logged_in(view_only).get(f"/relay/messages/{message.pk}/"))
    assert f'href="{HISTORY}?queue_id={message.queue_id}"' in html
    assert Message.objects.count() == 1
