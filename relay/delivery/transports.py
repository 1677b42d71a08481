"""Transports: where claimed mail goes. Each takes one batch of claimed entries with their open
recipients and returns one result type, a verdict per recipient (delivered, deferred,
failed, with the reply), so one dequeuer (``relay.delivery.engine.deliver_claimed``) drives
any of them and one ``record`` writes what they found. A transport may hand over an entry's
verdicts as soon as it has them (``Batch.report``: the dequeuer records them at once) and
ask for more claimed mail while it is still at work (``Batch.more``).

* ``SmtpTransport``: one SMTP connection to the queue's next hop (``client.send_stream``),
  each message's replies judged by the reply rules and reported as they arrive, more mail
  claimed while the connection is open.
* ``relay.local.MaildirTransport``: files in the server's drop directory.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from connectors.models import Connector
from relay.delivery.client import BatchResult, MessageResult, OutboundMessage, send_stream
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
    # Records one entry's verdicts at once (its own transaction): call it as soon as they are
    # known, so a process that dies later does not attempt that entry again.
    report: Callable[[int, Sequence[Verdict], Handoff], None] = lambda pk, verdicts, handoff: None
    # The next claimed entries for the same connection (None: no more); only the entries and
    # recipients of what it returns are new, the callbacks are these. With True (nothing is
    # left to send) it may wait for mail queued meanwhile: the connection stays open.
    more: Callable[[bool], Batch | None] = lambda wait: None


class Reach(enum.Enum):
    """Whether the transport reached its next hop (what a connector's link state follows)."""

    NOT_TRIED = "not tried"  # nothing to send, no hop known, or nothing to reach (a Maildir)
    REACHED = "reached"
    UNREACHABLE = "unreachable"  # no hop took the connection


@dataclass(frozen=True)
class Sent:
    """The one result type of every transport."""

    # By entry pk: one per open recipient (those reported on the way included).
    verdicts: Mapping[int, tuple[Verdict, ...]]
    handoff: Handoff
    reach: Reach = Reach.NOT_TRIED


class Transport(Protocol):
    def send(self, batch: Batch) -> Sent: ...


def _reach(result: BatchResult | None, answered: Collection[int] = ()) -> Reach:
    if result is None:
        return Reach.NOT_TRIED
    if result.results or answered:
        return Reach.REACHED
    return Reach.UNREACHABLE if result.connection_level else Reach.NOT_TRIED


@dataclass(frozen=True)
class SmtpTransport:
    """One connection of ``queue`` to its next hop: smart hosts in order, else MX. It takes
    messages from the batch, and from ``Batch.more`` when those run low, until there are no
    more or the connection ends; every message's verdicts are reported as its replies come."""

    queue: LinkQueue
    connector: Connector | None
    vs: VirtualServer | None  # whose settings the connection follows
    rules: Sequence[Rule]

    def send(self, batch: Batch) -> Sent:
        plan = hop_plan(self.queue, self.vs)
        entries: dict[int, QueueEntry] = {}
        recipients: dict[int, list[Recipient]] = {}
        waiting: deque[OutboundMessage] = deque()
        answered: dict[int, tuple[Verdict, ...]] = {}  # reported as they came
        no_more = False

        def load(part: Batch) -> None:
            for entry in part.entries:
                entries[entry.pk] = entry
                recipients[entry.pk] = list(part.recipients.get(entry.pk, ()))
                if recipients[entry.pk]:
                    waiting.append(_outbound(entry, recipients[entry.pk]))

        def take() -> OutboundMessage | None:
            nonlocal no_more
            # The next claim before the last message goes: the connection always holds one.
            # With nothing left, the last claim may wait for mail queued meanwhile.
            if len(waiting) <= 1 and not no_more:
                part = batch.more(not waiting)
                if part is not None:
                    load(part)
                elif not waiting:
                    no_more = True
            while not waiting and not no_more:  # what it loaded had nothing open
                part = batch.more(True)
                if part is None:
                    no_more = True
                else:
                    load(part)
            return waiting.popleft() if waiting else None

        def report(found: MessageResult, hop: str) -> None:
            pk = found.key
            judged = judge(
                [entries[pk]], recipients, plan, BatchResult((found,), hop=hop), self.rules
            )
            answered[pk] = tuple(judged[pk])
            batch.report(pk, answered[pk], Handoff(hop=hop))

        load(batch)
        result: BatchResult | None = None
        if plan.hops and waiting:
            options = outbound_options(self.connector, self.vs)
            result = send_stream(plan, take, options, batch.renew, report)
        rest = [entry for pk, entry in entries.items() if pk not in answered]
        if result is not None and result.ended is not None:
            ended = result.ended
            result = replace(
                result,
                results=tuple(
                    MessageResult(e.pk, {r.address: ended for r in recipients[e.pk]}) for e in rest
                ),
            )
        verdicts = judge(rest, recipients, plan, result, self.rules)
        handoff = Handoff(
            hop=result.hop if result is not None else "",
            queue_error=result.connection_error if result is not None else plan.error,
        )
        every = {**answered, **{pk: tuple(v) for pk, v in verdicts.items()}}
        return Sent(every, handoff, _reach(result, answered))


def _outbound(entry: QueueEntry, recipients: Sequence[Recipient]) -> OutboundMessage:
    return OutboundMessage(
        key=entry.pk,
        sender=entry.message.sender,
        recipients=tuple(r.address for r in recipients),
        content=entry.message.raw,
        smtputf8=entry.message.smtputf8,
    )
