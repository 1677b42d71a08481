"""``manage.py importconfig org.json [--dry-run] --as USER``: show what importing the file
would create, change and delete, then (without ``--dry-run``) apply it in one transaction with
one audit entry per change. An invalid file is refused as a whole, exit code 1."""

from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from smtpadmin import configio
from smtpadmin.roles import Role, role_of


class Command(BaseCommand):
    help = (
        "Import a configuration file written by exportconfig: print the plan (created, changed "
        "old -> new, deleted), then apply it in one transaction, audited as the Full "
        "Administrator given by --as. --dry-run prints the plan and checks it without changing "
        "anything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The configuration file ('-' = standard input).")
        parser.add_argument("--dry-run", action="store_true", help="Show the plan; change nothing.")
        parser.add_argument(
            "--as",
            dest="username",
            help="The Full Administrator the changes are audited as (required to apply).",
        )
        parser.add_argument(
            "--passphrase-file",
            help="A file whose first line is the passphrase of the file's secrets "
            f"(else {configio.PASSPHRASE_ENV}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = None
        if options["username"] or not options["dry_run"]:
            user = self._user(options["username"])
        try:
            if options["file"] == "-":
                text = sys.stdin.buffer.read()
            else:
                with open(options["file"], "rb") as handle:
                    text = handle.read()
            passphrase = configio.passphrase_from(options["passphrase_file"])
        except OSError as exc:
            raise CommandError(f"Cannot read {exc.filename}: {exc.strerror}.") from None
        try:
            config = configio.read(text, passphrase)
            the_plan = configio.plan(config)
            self.stdout.write(the_plan.text(), ending="")
            result = configio.apply(config, user, commit=not options["dry_run"])
        except configio.ConfigError as exc:
            for message in exc.messages:
                self.stderr.write(message)
            raise CommandError("The file was refused; nothing was changed.") from None
        if options["dry_run"]:
            self.stdout.write("Dry run: the file is valid; nothing was changed.")
        else:
            self.stdout.write(
                f"Applied: {result.plan.summary().replace('to ', '')}; "
                f"{result.audit_entries} audit entries (see the Audit Log)."
            )

    @staticmethod
    def _user(username: str | None) -> Any:
        if not username:
            raise CommandError("Applying an import needs --as USERNAME (a Full Administrator).")
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user '{username}'.")
        if role_of(user) < Role.FULL:
            raise CommandError(f"'{username}' is not a Full Administrator.")
        return user
