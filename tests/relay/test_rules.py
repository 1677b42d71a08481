"""relay.queue.rules: which refusals are retried and which fail, as administrators edit it."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError

from relay.models import ReplyRule
from relay.queue.rules import DEFAULT_RULES, Rule, classify, load_rules

pytestmark = pytest.mark.django_db


def rule(action: str = "retry", **fields: str) -> Rule:
    pattern = fields.pop("pattern", "")
    return Rule(
        action="retry" if action == "retry" else "fail",
        pattern=re.compile(pattern, re.IGNORECASE) if pattern else None,
        **fields,
    )


# --- without rules: RFC 5321 -------------------------------------------------------------


def test_without_rules_a_4xx_reply_is_retried_and_a_5xx_reply_fails() -> None:
    assert classify(451, "4.3.0 Try again", []) == "retry"
    assert classify(550, "5.1.1 No such user", []) == "fail"


def test_a_missing_or_garbled_code_is_a_connection_problem_and_is_retried() -> None:
    assert classify(0, "Connection reset by peer", []) == "retry"
    assert classify(999, "what", []) == "retry"


# --- the seeded defaults ---------------------------------------------------------------


def test_a_new_installation_has_the_default_rules_in_order() -> None:
    seeded = list(ReplyRule.objects.values("order", "code", "status", "pattern", "action", "note"))
    expected = [{"code": "", "status": "", "pattern": "", **default} for default in DEFAULT_RULES]
    assert seeded == expected


def test_by_default_a_full_mailbox_is_retried_although_it_says_5xx() -> None:
    rules = load_rules()
    assert classify(552, "5.2.2 Mailbox full", rules) == "retry"
    assert classify(550, "5.2.2 <bob@example.org>: mailbox over quota", rules) == "retry"
    # 5.2.20 is not 5.2.2: codes compare by their parts.
    assert classify(550, "5.2.20 Something else", rules) == "fail"


def test_by_default_greylisting_is_retried_even_with_a_5xx_code() -> None:
    rules = load_rules()
    assert classify(550, "5.7.1 Greylisted, please come back later", rules) == "retry"
    assert classify(554, "You have been gray-listed", rules) == "retry"
    assert classify(550, "5.7.1 Relaying denied", rules) == "fail"


def test_by_default_a_refused_authentication_is_retried() -> None:
    assert classify(535, "5.7.8 Authentication credentials invalid", load_rules()) == "retry"


def test_by_default_a_5xx_that_says_it_is_temporary_is_retried() -> None:
    rules = load_rules()
    assert classify(550, "Mailbox temporarily disabled", rules) == "retry"
    assert classify(550, "5.1.1 No such user", rules) == "fail"
    assert classify(451, "4.7.1 Try again later", rules) == "retry"


# --- editing the rules -----------------------------------------------------------------


def test_the_first_matching_rule_in_order_decides() -> None:
    rules = [rule("fail", code="450", pattern="unknown user"), rule("retry", code="4")]
    assert classify(450, "4.1.1 Unknown user here", rules) == "fail"
    assert classify(450, "4.2.0 Mailbox busy", rules) == "retry"


def test_every_condition_of_a_rule_must_match() -> None:
    rules = [rule("retry", code="550", status="5.7", pattern="spamhaus")]
    assert classify(550, "5.7.1 Listed at Spamhaus", rules) == "retry"
    assert classify(554, "5.7.1 Listed at Spamhaus", rules) == "fail"  # other code
    assert classify(550, "5.1.1 Listed at Spamhaus", rules) == "fail"  # other status
    assert classify(550, "5.7.1 Policy", rules) == "fail"  # no match in the text


def test_a_disabled_rule_is_not_applied() -> None:
    ReplyRule.objects.all().delete()
    ReplyRule.objects.create(order=1, code="5", action="retry", enabled=False)
    ReplyRule.objects.create(order=2, status="5.1.1", action="retry")
    rules = load_rules()
    assert classify(550, "5.1.1 No such user", rules) == "retry"
    assert classify(550, "5.7.1 Denied", rules) == "fail"


def test_rules_load_in_their_order_whatever_order_they_were_made_in() -> None:
    ReplyRule.objects.all().delete()
    ReplyRule.objects.create(order=20, code="4", action="retry")
    ReplyRule.objects.create(order=10, code="451", action="fail")
    assert classify(451, "4.3.0 No", load_rules()) == "fail"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"code": "6"}, "code"),
        ({"code": "5x"}, "code"),
        ({"status": "5.1.1.1"}, "status"),
        ({"status": "x.1"}, "status"),
        ({"pattern": "(unclosed"}, "pattern"),
        ({}, "code"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_on_save(fields: dict[str, str], field: str) -> None:
    candidate = ReplyRule(action="retry", **fields)
    with pytest.raises(ValidationError) as caught:
        candidate.full_clean()
    assert field in caught.value.message_dict


def test_a_rule_says_what_it_does() -> None:
    made = ReplyRule(code="552", status="5.2.2", pattern="quota", action="retry")
    made.full_clean()
    assert str(made) == "code 552 and status 5.2.2 and text ~ /quota/ -> retry"
