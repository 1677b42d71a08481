"""``python manage.py flushqueue [QUEUE ...] --as USER``: Force Connection, like Postfix's
``postqueue -f`` / ``-s site``: every waiting message of the queue is due now, ignoring its
retry timer, and delivery is asked at once. Without QUEUE: every queue with waiting mail.
Audited as USER, exactly as the console's Force Connection. Exit 1 for an unknown queue."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from relay.admin.actions import retry_queue_now
from relay.admin.viewer import queue_list
from relay.cli import acting_user, find_queue


class Command(BaseCommand):
    help = "Force Connection: deliver the waiting mail of queues now (like postqueue -f)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", metavar="QUEUE", help="id or name (default: all)")
        parser.add_argument("--as", dest="user", help="the administrator acting (audit log)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["user"])
        if options["queues"]:
            queues = [find_queue(name) for name in options["queues"]]
        else:
            annotated: Any = queue_list(timezone.now())
            queues = list(annotated.filter(message_count__gt=0))
        for queue in queues:
            count = retry_queue_now(queue, user)
            self.stdout.write(
                f"{queue.name}: forced a connection ({count} message(s) made due now)"
            )
        if not queues:
            self.stdout.write("No queue has waiting mail.")
