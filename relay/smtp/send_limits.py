"""An SMTP credential's send limit (messages per hour), counted across every relay process.

The count lives on the credential's row (``sent_hour``, ``sent_in_hour``): one conditional
UPDATE takes a message from this hour's allowance, or changes nothing when the allowance is
used up, so two processes (or two sessions) can never both take the last one. A new hour
starts the count again in the same statement. The database is the one store every relay
process shares whether or not Redis is configured, and the statement runs only for an
authenticated session whose credential has a limit.

What counts: every MAIL FROM the relay accepts from the credential's sessions (as Postfix's
message rate limit counts them), whether or not the message is then completed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connection
from django.db.models import Case, CharField, F, Func, Q, Value, When
from django.db.models.functions import Greatest

from servers.models import SmtpCredential
from servers.models.security import hour_number

# PostgreSQL: this statement's own transaction commits without waiting for the WAL flush
# (``set_config(..., true)`` lasts until its end), so counting costs no disk wait per MAIL.
# A crash of the database server itself may forget the counts of its last moment: a
# credential may then send a few more than its limit that hour, never fewer.
ASYNCHRONOUS_COMMIT = Func(
    Value("synchronous_commit"),
    Value("off"),
    Value(True),
    function="set_config",
    output_field=CharField(),
)


@dataclass(frozen=True)
class SendLimit:
    """What an authenticated session knows of its credential's limit (read at AUTH)."""

    credential_id: int
    username: str
    per_hour: int


def send_limit_of(credential: SmtpCredential) -> SendLimit | None:
    limit = credential.send_limit_per_hour
    return SendLimit(credential.pk, credential.username, limit) if limit else None


def take_message(limit: SendLimit, now: datetime.datetime | None = None) -> bool:
    """Count one message against the credential's limit in the hour of ``now``; ``False``
    (and nothing counted) when the hour's allowance is used up. A process whose clock is
    behind another's counts into the later hour it finds, never back into an earlier one."""
    hour = hour_number(now)
    rows = SmtpCredential.objects.filter(pk=limit.credential_id).filter(
        Q(sent_hour__lt=hour) | Q(sent_in_hour__lt=limit.per_hour)
    )
    if connection.vendor == "postgresql":
        rows = rows.alias(asynchronous=ASYNCHRONOUS_COMMIT).filter(asynchronous__isnull=False)
    counted = rows.update(
        sent_in_hour=Case(When(sent_hour__lt=hour, then=Value(1)), default=F("sent_in_hour") + 1),
        sent_hour=Greatest(F("sent_hour"), Value(hour)),
    )
    return counted == 1
