"""``python manage.py queuestats``: one line per link queue with waiting mail (``--all``: every
queue), as the Queue Viewer shows them: messages, size, state, the oldest message's age, the
next retry, the name; then the totals. Columns are separated by blanks and the name comes
last, so ``awk '{print $1}'`` works. Read-only; exit 0."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from relay.admin.viewer import queue_list, queue_state
from relay.cli import age, kilobytes


class Command(BaseCommand):
    help = "Per link queue: messages, size, state, oldest, next retry (like qshape)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="empty queues too")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        write = self.stdout.write
        write(
            f"{'ID':>6} {'MESSAGES':>8} {'KBYTES':>8} {'STATE':<10} {'OLDEST':>6} "
            f"{'RETRY IN':>8}  QUEUE"
        )
        messages = size = 0
        queues: Any = queue_list(now)  # annotated with the Queue Viewer's columns
        if not options["all"]:
            queues = queues.filter(message_count__gt=0)
        for queue in queues.iterator(chunk_size=500):
            count = queue.message_count or 0
            messages += count
            size += queue.total_size or 0
            retry = "-"
            if queue.next_retry_at is not None and queue.next_retry_at > now:
                retry = age(now, queue.next_retry_at)
            write(
                f"{queue.pk:>6} {count:>8} {kilobytes(queue.total_size or 0):>8} "
                f"{queue_state(queue, now):<10} {age(queue.oldest_message_at, now):>6} "
                f"{retry:>8}  {queue.name}"
            )
        write(f"{'total':>6} {messages:>8} {kilobytes(size):>8}")
