"""Reply rules in the console (Tools > Queue Viewer > Reply Rules): the rules in the order the
delivery engine tries them, a sheet to add or change one (checked, audited), Delete; read-only
for view-only administrators."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from relay.queue.rules import DEFAULT_RULES, ReplyRule, classify, load_rules
from smtpadmin.models import AuditEntry
from tests.relay.queue_world import html_of, logged_in

pytestmark = pytest.mark.django_db

LIST = "/relay/reply-rules/"
NEW = "/relay/reply-rules/new/"


def rule_form(**fields: str) -> dict[str, str]:
    return {
        "order": "5",
        "code": "",
        "status": "",
        "pattern": "",
        "action": "fail",
        "enabled": "on",
        "note": "",
        **fields,
    }


def test_the_list_shows_the_rules_in_the_order_they_are_tried(view_only: User) -> None:
    html = html_of(logged_in(view_only).get(LIST))

    orders = [int(n) for n in re.findall(r'<td><a href="/relay/reply-rules/\d+/">(\d+)</a>', html)]
    assert orders == sorted(r["order"] for r in DEFAULT_RULES)  # type: ignore[type-var]
    assert "Mailbox full" in html and "Retry later" in html
    assert "New Rule" not in html
    assert 'data-key="reply-rules"' in html


def test_an_administrator_adds_a_rule_the_engine_then_applies(administrator: User) -> None:
    client = logged_in(administrator)
    assert "New Rule" in html_of(client.get(LIST))

    response = client.post(
        NEW, rule_form(code="45", pattern=r"relay access denied", note="Misconfigured partner")
    )

    assert response.status_code == 302 and response["Location"] == LIST
    rule = ReplyRule.objects.get(note="Misconfigured partner")
    assert (rule.order, rule.code, rule.action) == (5, "45", "fail")
    assert classify(454, "4.7.1 Relay access denied", load_rules()) == "fail"
    assert AuditEntry.objects.filter(object_type="Reply Rule", action="create").exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pattern": "(unclosed"}, "pattern"),
        ({"code": "6"}, "code"),
        ({"status": "5.x"}, "status"),
        ({}, "code"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_the_reason(
    administrator: User, fields: dict[str, str], field: str
) -> None:
    before = ReplyRule.objects.count()

    response = logged_in(administrator).post(NEW, rule_form(**fields))

    assert response.status_code == 400
    assert re.search(rf'name="{field}".*?class="errorlist"', html_of(response), flags=re.S)
    assert ReplyRule.objects.count() == before


def test_changing_and_deleting_a_rule_is_audited(administrator: User) -> None:
    rule = ReplyRule.objects.get(status="5.2.2")
    client = logged_in(administrator)

    changed = client.post(f"{LIST}{rule.pk}/", rule_form(order="10", status="5.2.2", action="fail"))
    assert changed.status_code == 302
    rule.refresh_from_db()
    assert rule.action == "fail"
    entry = AuditEntry.objects.get(object_type="Reply Rule", field="action")
    assert (entry.old_value, entry.new_value) == ("retry", "fail")

    assert "Delete" in html_of(client.get(f"{LIST}{rule.pk}/delete/"))
    client.post(f"{LIST}{rule.pk}/delete/")
    assert not ReplyRule.objects.filter(pk=rule.pk).exists()
    assert AuditEntry.objects.filter(object_type="Reply Rule", action="delete").exists()


def test_a_view_only_administrator_reads_rules_but_cannot_change_them(view_only: User) -> None:
    rule = ReplyRule.objects.first()
    assert rule is not None
    client = logged_in(view_only)

    sheet = html_of(client.get(f"{LIST}{rule.pk}/"))
    assert "disabled" in sheet
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, rule_form(code="4")).status_code == 403
    assert client.post(f"{LIST}{rule.pk}/", rule_form(code="4")).status_code == 403
    assert client.post(f"{LIST}{rule.pk}/delete/").status_code == 403
    assert ReplyRule.objects.filter(pk=rule.pk).exists()
    assert not AuditEntry.objects.exists()
