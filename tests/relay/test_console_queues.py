"""Queue Viewer in the console: the queues with their state and columns, a queue's messages,
message properties and .eml, Find Messages with bulk actions after a confirmation page; POST
forms with CSRF for those who may act, refusals for those who may not."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.test import Client

from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import AuditEntry
from tests.relay.queue_world import (
    LOCAL_SENDER,
    Queues,
    deliver,
    entry,
    fail,
    html_of,
    logged_in,
    queue_named,
)

pytestmark = pytest.mark.django_db

VIEWER = "/relay/queues/"
FIND = "/relay/find/"
CONFIRM = "/relay/find/confirm/"


def rows(html: str) -> list[str]:
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


def row_of(html: str, text: str) -> str:
    (row,) = [r for r in rows(html) if text in r]
    return row


def post_forms(html: str) -> list[str]:
    return re.findall(r'<form method="post" action="([^"]+)"', html)


# --- every page, every role --------------------------------------------------------------

PAGES: dict[str, Callable[[Queues], str]] = {
    "queue viewer": lambda q: VIEWER,
    "queue": lambda q: f"{VIEWER}{queue_named('example.org').pk}/",
    "message": lambda q: f"/relay/messages/{Message.objects.get().pk}/",
    "eml": lambda q: f"/relay/messages/{Message.objects.get().pk}/eml/",
    "find": lambda q: f"{FIND}?domain=example.org",
    "tracking": lambda q: "/relay/tracking/?sender=sender%40outside.test",
    "history": lambda q: f"/relay/tracking/history/?queue_id={Message.objects.get().queue_id}",
}
CONFIRMATIONS: dict[str, Callable[[Queues], str]] = {
    "delete queue": lambda q: f"{VIEWER}{queue_named('example.org').pk}/delete/?ndr=1",
    "delete message": lambda q: f"/relay/messages/{Message.objects.get().pk}/delete/?ndr=0",
    "bulk": lambda q: f"{CONFIRM}?domain=example.org&action=freeze",
}
READERS = {"full_admin": 200, "administrator": 200, "view_only": 200, "outsider": 403}
ACTORS = {"full_admin": 200, "administrator": 200, "view_only": 403, "outsider": 403}


def person(request: pytest.FixtureRequest, role: str) -> User | None:
    return None if role == "anonymous" else request.getfixturevalue(role)


@pytest.mark.parametrize("role", [*READERS, "anonymous"])
@pytest.mark.parametrize("page", [*PAGES, *CONFIRMATIONS])
def test_every_page_answers_each_role_as_its_rights_allow(
    request: pytest.FixtureRequest, queues: Queues, page: str, role: str
) -> None:
    queues.send(["bob@example.org"])
    url = {**PAGES, **CONFIRMATIONS}[page](queues)

    response = logged_in(person(request, role)).get(url)

    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    else:
        expected = (READERS if page in PAGES else ACTORS)[role]
        assert response.status_code == expected, (page, role)
    if role == "outsider":
        assert b"outside.test" not in response.content


def test_the_tools_section_of_the_tree_leads_to_the_relay_pages(
    view_only: User, queues: Queues
) -> None:
    html = html_of(logged_in(view_only).get(VIEWER))
    for key, url in [
        ("queue-viewer", VIEWER),
        ("find-messages", FIND),
        ("tracking-center", "/relay/tracking/"),
    ]:
        assert re.search(rf'data-key="{key}".*?<a href="{url}"', html, flags=re.S), key
    assert 'class="node selected" data-key="queue-viewer"' in html


# --- Queue Viewer ------------------------------------------------------------------------


def test_queue_viewer_shows_each_queue_with_state_and_columns(
    view_only: User, queues: Queues
) -> None:
    queues.send(["bob@example.org", "carol@example.org"])
    fail(entry(queues.send(["erin@example.net"])), "451 4.7.1 Greylisted")

    html = html_of(logged_in(view_only).get(VIEWER))

    for header in (
        "Queue",
        "Source",
        "State",
        "Oldest message",
        "Messages",
        "Total size (KB)",
        "Next retry",
        "Last error",
    ):
        assert f">{header}" in html
    org = row_of(html, ">example.org<")
    assert "Connector Internet" in org and ">Ready<" in org and "<td>1</td>" in org
    net = row_of(html, ">example.net<")
    assert ">Retry<" in net and "451 4.7.1 Greylisted" in net
    for name in (
        "Messages waiting to be routed",
        "Final destination currently unreachable",
        "Failed message retry",
        "DSN messages pending submission",
    ):
        assert name in html


def test_empty_link_queues_are_hidden_until_asked_for(view_only: User, queues: Queues) -> None:
    deliver(entry(queues.send(["bob@example.org"])))
    client = logged_in(view_only)

    assert ">example.org<" not in html_of(client.get(VIEWER))
    assert ">example.org<" in html_of(client.get(f"{VIEWER}?all=1"))
    LinkQueue.objects.filter(name="example.org").update(frozen=True)
    assert ">example.org<" in html_of(client.get(VIEWER))  # frozen: shown even when empty


def test_the_queue_list_sorts_by_message_count(view_only: User, queues: Queues) -> None:
    queues.send(["a@one.example"])
    queues.send(["a@two.example", "b@two.example"])
    queues.send(["a@two.example"])

    html = html_of(logged_in(view_only).get(VIEWER, {"sort": "message_count", "dir": "desc"}))

    assert html.index(">two.example<") < html.index(">one.example<")


def test_an_administrator_gets_the_queue_buttons_a_view_only_administrator_does_not(
    administrator: User, view_only: User, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    pk = queue_named("example.org").pk

    html = html_of(logged_in(administrator).get(VIEWER))
    assert f"/relay/queues/{pk}/freeze/" in post_forms(html)
    assert f"/relay/queues/{pk}/retry/" in post_forms(html)
    assert f'href="/relay/queues/{pk}/delete/?ndr=1"' in html
    assert f'href="/relay/queues/{pk}/delete/?ndr=0"' in html
    viewer = html_of(logged_in(view_only).get(VIEWER))
    assert post_forms(viewer) == ["/logout/"]
    assert "Delete all" not in viewer


def test_freeze_from_the_console_freezes_audits_and_says_so(
    administrator: User, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    pk = queue_named("example.org").pk

    response = logged_in(administrator).post(f"{VIEWER}{pk}/freeze/", {"next": VIEWER}, follow=True)

    assert response.redirect_chain[-1] == (VIEWER, 302)
    assert "Froze the queue example.org." in html_of(response)
    assert ">Frozen<" in row_of(html_of(response), ">example.org<")
    assert f"/relay/queues/{pk}/unfreeze/" in post_forms(html_of(response))
    assert AuditEntry.objects.get().username == "adam-admin"


def test_force_connection_from_the_console_makes_waiting_mail_due(
    administrator: User, queues: Queues
) -> None:
    item = fail(entry(queues.send(["bob@example.org"])), minutes=60)

    response = logged_in(administrator).post(f"{VIEWER}{item.queue_id}/retry/", follow=True)

    assert "1 waiting message due now" in html_of(response)
    assert QueueEntry.objects.due().filter(pk=item.pk).exists()


@pytest.mark.parametrize("verb", ["freeze", "unfreeze", "retry", "delete"])
def test_a_forged_queue_action_from_a_view_only_administrator_is_refused(
    view_only: User, queues: Queues, verb: str
) -> None:
    message = queues.send(["bob@example.org"])
    pk = queue_named("example.org").pk

    response = logged_in(view_only).post(f"{VIEWER}{pk}/{verb}/", {"ndr": "0"})

    assert response.status_code == 403
    assert not LinkQueue.objects.get(pk=pk).frozen
    assert message.recipients.get().state == Recipient.State.PENDING
    assert not AuditEntry.objects.exists()


def test_a_queue_action_without_the_csrf_token_is_refused(
    administrator: User, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    pk = queue_named("example.org").pk

    assert client.post(f"{VIEWER}{pk}/freeze/").status_code == 403
    assert client.post(f"{VIEWER}{pk}/delete/", {"ndr": "0"}).status_code == 403
    assert not LinkQueue.objects.get(pk=pk).frozen
    assert Recipient.objects.get().state == Recipient.State.PENDING


def test_queue_actions_answer_only_post(administrator: User, queues: Queues) -> None:
    queues.send(["bob@example.org"])
    pk = queue_named("example.org").pk
    assert logged_in(administrator).get(f"{VIEWER}{pk}/freeze/").status_code == 405


def test_delete_all_asks_first_then_deletes_with_ndr(administrator: User, queues: Queues) -> None:
    queues.send(["bob@example.org"], sender=LOCAL_SENDER)
    queues.send(["carol@example.org"], sender=LOCAL_SENDER)
    pk = queue_named("example.org").pk
    client = logged_in(administrator)

    question = html_of(client.get(f"{VIEWER}{pk}/delete/?ndr=1"))
    assert "Delete all 2 messages in the queue “example.org” with a non-delivery report" in question
    assert Recipient.objects.filter(state=Recipient.State.DELETED).count() == 0
    (form,) = re.findall(r'<form method="post">.*?</form>', question, flags=re.S)
    assert 'name="csrfmiddlewaretoken"' in form and 'name="ndr" value="1"' in form

    response = client.post(f"{VIEWER}{pk}/delete/", {"ndr": "1"}, follow=True)

    assert "Deleted 2 messages from example.org and sent 2 NDRs." in html_of(response)
    assert response.redirect_chain[-1] == (f"{VIEWER}{pk}/", 302)
    assert Recipient.objects.filter(state=Recipient.State.DELETED).count() == 2
    assert Message.objects.filter(system=True).count() == 2


def test_a_queue_page_lists_its_messages_with_buttons_for_each(
    administrator: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"], subject="<b>Quarterly</b> report")
    failed = fail(entry(queues.send(["carol@example.org"])), "451 4.2.0 Mailbox busy")
    queues.send(["erin@example.net"])
    pk = queue_named("example.org").pk

    page = html_of(logged_in(administrator).get(f"{VIEWER}{pk}/"))
    html = page[page.index("<h2>Messages") :]

    first = row_of(html, message.queue_id)
    assert f'href="/relay/messages/{message.pk}/"' in first
    assert "&lt;b&gt;Quarterly&lt;/b&gt; report" in first and "<b>Quarterly" not in page
    assert f"/relay/messages/{message.pk}/freeze/" in post_forms(first)
    second = row_of(html, failed.message.queue_id)
    assert "451 4.2.0 Mailbox busy" in second and ">Retry<" in second
    assert "erin@example.net" not in html
    assert "2 messages, oldest first." in html


# --- message properties ------------------------------------------------------------------


def test_message_properties_show_envelope_headers_recipients_and_queues(
    view_only: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "alice@smtpadmin.test"], subject="Budget")
    fail(entry(message, "example.org"), "451 4.7.1 Greylisted")

    html = html_of(logged_in(view_only).get(f"/relay/messages/{message.pk}/"))

    for text in (
        message.queue_id,
        message.message_id.replace("<", "&lt;").replace(">", "&gt;"),
        "sender@outside.test",
        "Budget",
        f"{message.size:,} bytes",
        "Expires",
        "192.0.2.10 (mail.outside.test)",
        "451 4.7.1 Greylisted",
        "Local delivery",
        ">Received<",
        "Download .eml",
    ):
        assert text in html, text
    bob = row_of(html[html.index("<h2>Recipients") :], "bob@example.org")
    assert "Deferred" in bob and "example.org" in bob
    assert 'method="post"' not in html.split("<main", 1)[1].replace('action="/logout/"', "")


def test_message_properties_show_a_header_a_client_sent_as_text(
    view_only: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"], subject="<script>alert(1)</script>")
    html = html_of(logged_in(view_only).get(f"/relay/messages/{message.pk}/"))
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_eml_download_is_the_message_as_stored(view_only: User, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])

    response = logged_in(view_only).get(f"/relay/messages/{message.pk}/eml/")

    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == f'attachment; filename="{message.queue_id}.eml"'
    assert response.content == message.raw


def test_freezing_and_deleting_a_message_from_its_properties(
    administrator: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net"])
    page = f"/relay/messages/{message.pk}/"
    client = logged_in(administrator)

    frozen = client.post(f"{page}freeze/", {"next": page}, follow=True)
    assert "Froze " + message.queue_id + " in 2 queues." in html_of(frozen)
    assert f"{page}unfreeze/" in post_forms(html_of(frozen))
    question = html_of(client.get(f"{page}delete/?ndr=0"))
    assert "Recipients still waiting: bob@example.org, erin@example.net." in question
    deleted = client.post(f"{page}delete/", {"ndr": "0"}, follow=True)

    assert f"Deleted {message.queue_id} for 2 recipients." in html_of(deleted)
    assert set(message.recipients.values_list("state", flat=True)) == {"deleted"}
    assert TrackingEvent.objects.filter(kind="deleted", by="adam-admin").count() == 2
    assert "Delete (NDR)" not in html_of(deleted)  # nothing left to delete


def test_unknown_messages_and_queues_are_404(view_only: User, queues: Queues) -> None:
    client = logged_in(view_only)
    for url in ("/relay/messages/999999/", "/relay/messages/999999/eml/", f"{VIEWER}999999/"):
        assert client.get(url).status_code == 404, url


# --- Find Messages -----------------------------------------------------------------------


def test_find_messages_lists_what_matches_and_offers_bulk_actions_to_administrators(
    administrator: User, view_only: User, queues: Queues
) -> None:
    spam = [queues.send([f"u{n}@spam.example"]) for n in range(2)]
    other = queues.send(["bob@example.org"])

    html = html_of(logged_in(administrator).get(FIND, {"domain": "spam.example"}))

    assert "2 messages found" in html
    assert all(m.queue_id in html for m in spam) and other.queue_id not in html
    for action, ndr in [("freeze", 0), ("unfreeze", 0), ("delete", 1), ("delete", 0)]:
        query = urlencode({"domain": "spam.example", "action": action, "ndr": ndr})
        assert f'href="{CONFIRM}?{query}"'.replace("&", "&amp;") in html
    viewer = html_of(logged_in(view_only).get(FIND, {"domain": "spam.example"}))
    assert "2 messages found" in viewer and CONFIRM not in viewer


def test_find_messages_shows_no_results_before_a_search(view_only: User, queues: Queues) -> None:
    queues.send(["bob@example.org"])
    html = html_of(logged_in(view_only).get(FIND))
    assert "found" not in html and 'name="sender"' in html and 'name="state"' in html


@pytest.mark.parametrize(
    "query",
    [
        {"older_than_minutes": "-3"},
        {"queue": "9" * 40},
        {"queue": "abc"},
        {"state": "nope"},
        {"sender": "a\x00b"},
        {"min_size_kb": "9" * 40},
    ],
)
def test_an_invalid_search_is_a_400_with_the_field_marked(
    view_only: User, queues: Queues, query: dict[str, str]
) -> None:
    response = logged_in(view_only).get(FIND, query)
    assert response.status_code == 400
    assert "has-error" in html_of(response)


def test_a_bulk_delete_is_confirmed_then_done_on_what_matches_then(
    administrator: User, queues: Queues
) -> None:
    spam = [queues.send([f"u{n}@spam.example"]) for n in range(3)]
    keep = queues.send(["bob@example.org"])
    client = logged_in(administrator)

    question = client.get(CONFIRM, {"domain": "spam.example", "action": "delete", "ndr": "0"})

    html = html_of(question)
    assert "Delete 3 messages without NDR?" in html
    assert "Criteria: Recipient domain: spam.example." in html
    (form,) = re.findall(r'<form method="post">.*?</form>', html, flags=re.S)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    hidden.pop("csrfmiddlewaretoken")
    assert hidden == {"domain": "spam.example", "action": "delete", "ndr": "0"}
    assert all(m.recipients.get().state == "pending" for m in spam)

    done = client.post(CONFIRM, hidden, follow=True)

    assert "Deleted 3 messages of 3 found, without NDR." in html_of(done)
    assert done.redirect_chain[-1] == (f"{FIND}?domain=spam.example", 302)
    assert all(m.recipients.get().state == "deleted" for m in spam)
    assert keep.recipients.get().state == "pending"
    assert AuditEntry.objects.get().new_value == "delete without ndr"


@pytest.mark.parametrize(
    "data",
    [
        {"action": "freeze"},
        {"domain": "spam.example", "action": "explode"},
        {"domain": "spam.example"},
        {"older_than_minutes": "-1", "action": "freeze"},
    ],
)
def test_a_bulk_action_without_clear_criteria_is_refused(
    administrator: User, queues: Queues, data: dict[str, str]
) -> None:
    message = queues.send(["u@spam.example"])
    client = logged_in(administrator)

    assert client.get(CONFIRM, data).status_code == 400
    assert client.post(CONFIRM, data).status_code == 400
    assert entry(message).state == QueueEntry.State.READY


def test_a_forged_bulk_action_is_refused(view_only: User, queues: Queues) -> None:
    message = queues.send(["u@spam.example"])
    response = logged_in(view_only).post(CONFIRM, {"domain": "spam.example", "action": "freeze"})
    assert response.status_code == 403
    assert entry(message).state == QueueEntry.State.READY
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(User.objects.create_superuser("root", password="x" * 20))
    assert csrf.post(CONFIRM, {"domain": "spam.example", "action": "freeze"}).status_code == 403
    assert entry(message).state == QueueEntry.State.READY
