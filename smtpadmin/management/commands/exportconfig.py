"""``manage.py exportconfig > org.json``: the organization's configuration as JSON on standard
output, in a stable order (two exports of the same configuration are equal). Secrets only with
``--secrets``, encrypted with a passphrase read from ``--passphrase-file`` or the environment."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from smtpadmin import configio


class Command(BaseCommand):
    help = (
        "Write the organization's configuration as JSON on standard output. Secrets (password "
        "hashes, outbound passwords, private keys) are left out unless --secrets is given; then "
        "they are encrypted with the passphrase from --passphrase-file or "
        f"{configio.PASSPHRASE_ENV}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--secrets", action="store_true", help="Include the secrets, encrypted."
        )
        parser.add_argument(
            "--passphrase-file",
            help=f"A file whose first line is the passphrase (else {configio.PASSPHRASE_ENV}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        passphrase = None
        if options["secrets"]:
            try:
                passphrase = configio.passphrase_from(options["passphrase_file"])
            except OSError as exc:
                raise CommandError(f"Cannot read the passphrase file: {exc.strerror}.") from None
            if not passphrase:
                raise CommandError(
                    "--secrets needs a passphrase: --passphrase-file FILE or "
                    f"{configio.PASSPHRASE_ENV}."
                )
        self.stdout.write(configio.export_text(options["secrets"], passphrase), ending="")
