"""``python manage.py delmsg QUEUE_ID ... | --all [--queue QUEUE] [--ndr] --as USER``: delete
messages from the queues, like Postfix's ``postsuper -d``: every recipient still waiting
becomes "deleted" (4.3.2), with a non-delivery report to the sender when ``--ndr``. The same
function as the console's Delete, audited as USER. Exit 1 when a queue id is unknown (the
others are still deleted)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay.admin.actions import bulk_action, delete_message
from relay.admin.viewer import OPEN_ENTRY_STATES
from relay.cli import acting_user, find_queue
from relay.queue.models import Message


class Command(BaseCommand):
    help = "Delete messages from the queues (like postsuper -d), with or without an NDR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", metavar="QUEUE_ID", help="messages by queue id")
        parser.add_argument("--all", action="store_true", help="every waiting message")
        parser.add_argument("--queue", help="with --all: only what waits in this queue")
        parser.add_argument("--ndr", action="store_true", help="send the senders an NDR")
        parser.add_argument("--as", dest="user", help="the administrator acting (audit log)")

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[str] = options["ids"]
        if bool(ids) == bool(options["all"]):
            raise CommandError("Give queue ids or --all (not both).")
        if options["queue"] and not options["all"]:
            raise CommandError("--queue goes with --all.")
        user = acting_user(options["user"])
        ndr: bool = options["ndr"]
        with_ndr = "with NDR" if ndr else "without NDR"
        if options["all"]:
            waiting = Message.objects.filter(entries__state__in=OPEN_ENTRY_STATES)
            if options["queue"]:
                waiting = waiting.filter(entries__queue=find_queue(options["queue"]))
            outcome = bulk_action(
                waiting, "delete", user, ndr=ndr, description="manage.py delmsg --all"
            )
            line = f"deleted {outcome.changed} message(s), {outcome.recipients} recipient(s), "
            if ndr:
                line += f"with NDR ({outcome.dsns} NDR(s) queued"
                line += (
                    f", {outcome.dsn_errors} could not be: see the log)"
                    if outcome.dsn_errors
                    else ")"
                )
            else:
                line += with_ndr
            self.stdout.write(line)
            if outcome.dsn_errors:
                raise CommandError(f"{outcome.dsn_errors} NDR(s) could not be queued.")
            return
        missing = []
        for queue_id in ids:
            message = Message.objects.filter(queue_id=queue_id.upper().rstrip("*!")).first()
            if message is None:
                missing.append(f"no message with queue id {queue_id}")
                continue
            result = delete_message(message, user, ndr)
            self.stdout.write(
                f"{message.queue_id}: deleted {result.recipients} waiting recipient(s), {with_ndr}"
            )
            if result.dsn_errors:
                missing.append(f"{queue_id} (its NDR could not be queued: see the log)")
        if missing:
            raise CommandError(f"Not done: {', '.join(missing)}.")
