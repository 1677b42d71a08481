"""Reply classification: whether a remote server's refusal is worth another try.

RFC 5321 says a 4xx reply is temporary and a 5xx reply permanent, and most of the time that is
right. Real servers disagree in both directions: "552 5.2.2 mailbox full" clears when the
owner makes room, some greylisting servers answer 5xx, and a site may want a specific 4xx
(an address a remote server will never know) to fail at once instead of retrying for two
days. Administrators edit these rules (Queue Viewer's "Reply rules" page); the defaults are
seeded by a data migration (``DEFAULT_RULES``).

``classify`` is pure: the engine loads the enabled rules once per connection
(``load_rules``) and classifies every reply of that connection against the same snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

Action = Literal["retry", "fail"]
RETRY: Action = "retry"
FAIL: Action = "fail"

_CODE = re.compile(r"[2-5]\d{0,2}")
_STATUS = re.compile(r"[245](?:\.\d{1,3}){0,2}")
_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
# A pattern is applied to one reply text at a time; a rule that never ends is refused on save.
PATTERN_LENGTH = 500


class ReplyRule(models.Model):
    """One rule: a reply that matches every condition given (reply code prefix, enhanced status
    code prefix, regular expression on the text) is retried or failed. Rules are tried in
    ``order``; the first match decides; with no match, 4xx retries and 5xx fails."""

    class Action(models.TextChoices):
        RETRY = "retry", "Retry later"
        FAIL = "fail", "Fail (send an NDR)"

    order = models.PositiveIntegerField(default=100, help_text="Lower numbers are tried first")
    code = models.CharField(
        "Reply code",
        max_length=3,
        blank=True,
        help_text='A reply code or its beginning: "552", "55", "4". Blank = any',
    )
    status = models.CharField(
        "Enhanced status code",
        max_length=11,
        blank=True,
        help_text='An enhanced status code or its beginning: "5.2.2", "5.7". Blank = any',
    )
    pattern = models.CharField(
        max_length=PATTERN_LENGTH,
        blank=True,
        help_text="A regular expression searched in the reply text, case-insensitive. Blank = any",
    )
    action = models.CharField(max_length=5, choices=Action.choices)
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        conditions = [
            f"code {self.code}" if self.code else "",
            f"status {self.status}" if self.status else "",
            f"text ~ /{self.pattern}/" if self.pattern else "",
        ]
        return f"{' and '.join(c for c in conditions if c)} -> {self.action}"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        self.code = self.code.strip()
        self.status = self.status.strip()
        if self.code and not _CODE.fullmatch(self.code):
            errors["code"] = ['Enter a reply code or its beginning, e.g. "552", "55" or "4".']
        if self.status and not _STATUS.fullmatch(self.status):
            errors["status"] = ['Enter an enhanced status code or its beginning, e.g. "5.2.2".']
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                errors["pattern"] = [f"Not a valid regular expression: {exc}."]
        if not (self.code or self.status or self.pattern) and not errors:
            errors["code"] = ["Give at least one condition: a code, a status or a pattern."]
        if errors:
            raise ValidationError(errors)

    def snapshot(self) -> Rule:
        return Rule(
            code=self.code,
            status=self.status,
            pattern=re.compile(self.pattern, re.IGNORECASE) if self.pattern else None,
            action=RETRY if self.action == self.Action.RETRY else FAIL,
            label=str(self),
        )


@dataclass(frozen=True)
class Rule:
    """A rule as ``classify`` applies it (the pattern compiled once)."""

    action: Action
    code: str = ""
    status: str = ""
    pattern: re.Pattern[str] | None = None
    label: str = ""

    def matches(self, code: int, status: str, text: str) -> bool:
        if self.code and not str(code).startswith(self.code):
            return False
        if self.status and not _status_has_prefix(status, self.status):
            return False
        return not (self.pattern is not None and not self.pattern.search(text))


def _status_has_prefix(status: str, prefix: str) -> bool:
    """By components: "5.2" covers "5.2.2" and "5.2.20", "5.2.2" does not cover "5.2.20"."""
    if not status:
        return False
    parts, wanted = status.split("."), prefix.split(".")
    return parts[: len(wanted)] == wanted


def enhanced_status(text: str) -> str:
    """The enhanced status code (RFC 3463) in a reply text, e.g. "5.1.1"; "" when none."""
    found = _ENHANCED_STATUS.search(text)
    return found.group(1) if found else ""


def default_action(code: int) -> Action:
    """RFC 5321 when no rule matches: 5xx is permanent, everything else (4xx, and a missing or
    garbled code, which is a connection problem rather than a refusal) is worth a retry."""
    return FAIL if 500 <= code <= 599 else RETRY


def classify(code: int, text: str, rules: Iterable[Rule]) -> Action:
    """ "retry" or "fail" for one non-2xx reply (``code``, and the text after it). The first
    matching rule decides; see ``default_action`` for the rest."""
    status = enhanced_status(text)
    for rule in rules:
        if rule.matches(code, status, text):
            return rule.action
    return default_action(code)


def load_rules() -> list[Rule]:
    """The enabled rules, in order, ready for ``classify``."""
    return [rule.snapshot() for rule in ReplyRule.objects.filter(enabled=True)]


# The rules seeded into a new installation (migration 0003). The last two restate RFC 5321 so
# that the page shows the whole policy and an administrator can see where to add exceptions.
DEFAULT_RULES: Sequence[dict[str, object]] = (
    {
        "order": 10,
        "status": "5.2.2",
        "action": "retry",
        "note": "Mailbox full: retried until the message expires, since the owner may make room.",
    },
    {
        "order": 15,
        "code": "53",
        "action": "retry",
        "note": "The next hop refused our authentication (530-538): a setting to fix on our "
        "side, not the recipient's fault; retried until fixed or expired.",
    },
    {
        "order": 20,
        "pattern": r"grey-?list|gray-?list",
        "action": "retry",
        "note": "Greylisting, even when a server says it with a 5xx code.",
    },
    {
        "order": 30,
        "pattern": r"try again later|temporar(il)?y",
        "code": "5",
        "action": "retry",
        "note": 'A 5xx reply that calls itself temporary ("try again later").',
    },
    {"order": 900, "code": "4", "action": "retry", "note": "Temporary failure (RFC 5321)."},
    {"order": 910, "code": "5", "action": "fail", "note": "Permanent failure (RFC 5321)."},
)
