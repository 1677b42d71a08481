"""``python manage.py mailq [--queue QUEUE]``: the mail waiting for delivery, like Postfix's
``mailq`` / ``postqueue -p``: one block per message (queue id, size, arrival, sender), then per
link queue the last reply and the recipients still waiting. ``*`` after the queue id: being
delivered now; ``!``: frozen. Read-only; exit 0."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Prefetch
from django.utils import timezone

from relay.admin.viewer import OPEN_ENTRY_STATES
from relay.cli import find_queue, kilobytes
from relay.queue.models import QueueEntry, Recipient

WAITING = (Recipient.State.PENDING, Recipient.State.DEFERRED)
INDENT = " " * 42


class Command(BaseCommand):
    help = "List the mail waiting for delivery (like Postfix's mailq)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", help="only this link queue (its id or name)")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        entries = (
            QueueEntry.objects.filter(state__in=OPEN_ENTRY_STATES)
            .select_related("message", "queue")
            .prefetch_related(
                Prefetch(
                    "recipients",
                    queryset=Recipient.objects.filter(state__in=WAITING).order_by("pk"),
                )
            )
            .order_by("message_id", "pk")
        )
        if options["queue"]:
            entries = entries.filter(queue=find_queue(options["queue"]))
        write = self.stdout.write
        messages = total = 0
        current = None
        for entry in entries.iterator(chunk_size=500):
            message = entry.message
            if message.pk != current:
                if current is None:
                    write("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------")
                else:
                    write("")
                current = message.pk
                messages += 1
                total += message.size
                mark = ""
                if entry.state == QueueEntry.State.FROZEN:
                    mark = "!"
                elif entry.lease_until is not None and entry.lease_until > now:
                    mark = "*"
                arrival = timezone.localtime(message.received_at).strftime("%a %b %d %H:%M:%S")
                write(
                    f"{message.queue_id + mark:<11} {message.size:>8} {arrival:<20} "
                    f"{message.sender or 'MAILER-DAEMON'}"
                )
            if entry.last_response:
                write(f"{INDENT}({' '.join(entry.last_response.split())[:200]})")
            write(f"{INDENT}[{entry.queue.name}]")
            for recipient in entry.recipients.all():
                write(f"{INDENT}{recipient.address}")
        if not messages:
            write("Mail queue is empty")
            return
        requests = "Request" if messages == 1 else "Requests"
        write(f"\n-- {kilobytes(total)} Kbytes in {messages} {requests}.")
