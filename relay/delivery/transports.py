"""Transports: where claimed mail goes. Each takes one batch of claimed entries with their open
recipients and returns one result type, a verdict per recipient (delivered, deferred,
failed, with the reply), so one dequeuer (``relay.delivery.engine.deliver_claimed``) drives
any of them and one ``record`` writes what they found.

* ``SmtpTransport``: one SMTP connection to the queue's next hop (``client.send_batch``), the
  replies judged by the reply rules.
* ``relay.local.MaildirTransport``: files in the server's drop directory.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from connectors.models import Connector
from relay.delivery.client import BatchResult, OutboundMessage, send_batch
from relay.delivery.options import hop_plan, outbound_options
from relay.delivery.results import judge
from relay.queue.models import LinkQueue, QueueEntry, Recipient
from relay.queue.outcomes import Handoff, Verdict
from relay.queue.rules import Rule
from servers.models import VirtualServer


@dataclass(frozen=True)
class Batch:
    """What a transport gets: claimed entries (oldest first) and their open recipients."""

    entries: tuple[QueueEntry, ...]
    recipients: Mapping[int, tuple[Recipient, ...]]  # by entry pk
    # Entries no attempt had begun on before this one: nothing of theirs exists anywhere.
    first_attempts: frozenset[int]
    # Keeps the claim alive; call it between slow steps (a lease must not run out mid-batch).
    renew: Callable[[], None]


class Reach(enum.Enum):
    """Whether the transport reached its next hop (what a connector's link state follows)."""

    NOT_TRIED = "not tried"  # nothing to send, no hop known, or nothing to reach (a Maildir)
    REACHED = "reached"
    UNREACHABLE = "unreachable"  # no hop took the connection


@dataclass(frozen=True)
class Sent:
    """The one result type of every transport."""

    verdicts: Mapping[int, tuple[Verdict, ...]]  # by entry pk: one per open recipient
    handoff: Handoff
    reach: Reach = Reach.NOT_TRIED


class Transport(Protocol):
    def send(self, batch: Batch) -> Sent: ...


def _reach(result: BatchResult | None) -> Reach:
    if result is None:
        return Reach.NOT_TRIED
    if result.results:
        return Reach.REACHED
    return Reach.UNREACHABLE if result.connection_level else Reach.NOT_TRIED


@dataclass(frozen=True)
class SmtpTransport:
    """One connection of ``queue`` to its next hop: smart hosts in order, else MX."""

    queue: LinkQueue
    connector: Connector | None
    vs: VirtualServer | None  # whose settings the connection follows
    rules: Sequence[Rule]

    def send(self, batch: Batch) -> Sent:
        plan = hop_plan(self.queue, self.vs)
        messages = [
            OutboundMessage(
                key=entry.pk,
                sender=entry.message.sender,
                recipients=tuple(r.address for r in batch.recipients[entry.pk]),
                content=entry.message.raw,
                smtputf8=entry.message.smtputf8,
            )
            for entry in batch.entries
            if batch.recipients.get(entry.pk)
        ]
        result: BatchResult | None = None
        if plan.hops and messages:
            options = outbound_options(self.connector, self.vs)
            result = send_batch(plan, messages, options, batch.renew)
        recipients = {pk: list(found) for pk, found in batch.recipients.items()}
        verdicts = judge(batch.entries, recipients, plan, result, self.rules)
        handoff = Handoff(
            hop=result.hop if result is not None else "",
            queue_error=result.connection_error if result is not None else plan.error,
        )
        return Sent({pk: tuple(v) for pk, v in verdicts.items()}, handoff, _reach(result))
