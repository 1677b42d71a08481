"""Create (or ensure) a console user in one of the three roles, the Full Administrator by default.

``make run`` and the docker-compose web service call this on every start, so it must be safe to
repeat: an existing user keeps the password an administrator may have changed since.
``SMTPADMIN_ADMIN_PASSWORD`` is the password of ``admin`` only: any other user created with it
would log in with the Full Administrator's password.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from smtpadmin import throttle
from smtpadmin.roles import ROLE_SLUGS, Role, ensure_groups, role_from_slug, set_role

ADMIN_USERNAME = "admin"
ROLE_CHOICES = [ROLE_SLUGS[r] for r in (Role.FULL, Role.ADMINISTRATOR, Role.VIEW_ONLY)]


class Command(BaseCommand):
    help = (
        "Create a console user (default: the Full Administrator 'admin'), or ensure an existing "
        "one has its role. The password comes from --password, else (for 'admin' only) "
        "SMTPADMIN_ADMIN_PASSWORD, else one is generated and printed once. An existing user "
        "keeps its password unless --password or --reset-password is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=ADMIN_USERNAME, help="Default: admin.")
        parser.add_argument(
            "--password",
            help="The password to set (also for an existing user). For 'admin', prefer "
            "SMTPADMIN_ADMIN_PASSWORD: command lines are visible to other local users.",
        )
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="Give an existing user a new password (generated, or for 'admin' from "
            "SMTPADMIN_ADMIN_PASSWORD) instead of keeping the current one.",
        )
        parser.add_argument(
            "--role",
            choices=ROLE_CHOICES,
            default=ROLE_SLUGS[Role.FULL],
            help="Default: full_administrator.",
        )
        parser.add_argument(
            "--print-token",
            action="store_true",
            help="Print the user's API token (for Authorization: Token ...).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"].strip()
        if not username:
            raise CommandError("The user name cannot be empty.")
        role = role_from_slug(options["role"])
        explicit: str | None = options["password"]
        if explicit is not None and not explicit:
            raise CommandError("--password cannot be empty.")

        User = get_user_model()
        with transaction.atomic():
            ensure_groups()
            user = User.objects.select_for_update().filter(username=username).first()
            created = user is None
            if user is None:
                user = User(username=username)
            password, source = None, ""
            if created or explicit is not None or options["reset_password"]:
                password, source = self._choose_password(explicit, username)
                self._validate(password, user, source)
                user.set_password(password)
            user.save()
            if password is not None:
                throttle.unlock(throttle.Scope.CONSOLE, username)
            set_role(user, role)
            token, _ = Token.objects.get_or_create(user=user)

        if created:
            self.stdout.write(self.style.SUCCESS(f"Created {role.label} '{username}'."))
        else:
            self.stdout.write(f"User '{username}' already exists; ensured the role {role.label}.")
        if password is None:
            self.stdout.write("The password was kept (use --reset-password to change it).")
        elif source == "generated":
            self.stdout.write(
                f"Password for '{username}': {password}\n"
                "It is shown only this once; change it after the first login"
                + (
                    ", or set SMTPADMIN_ADMIN_PASSWORD before the first start."
                    if username == ADMIN_USERNAME
                    else "."
                )
            )
        else:
            self.stdout.write(f"Password set from {source}.")
        if not user.is_active:
            self.stderr.write(self.style.WARNING(f"'{username}' is disabled and cannot log in."))
        if options["print_token"]:
            self.stdout.write(f"API token for '{username}': {token.key}")

    def _choose_password(self, explicit: str | None, username: str) -> tuple[str, str]:
        if explicit is not None:
            return explicit, "--password"
        if username == ADMIN_USERNAME and settings.SMTPADMIN_ADMIN_PASSWORD:
            return settings.SMTPADMIN_ADMIN_PASSWORD, "SMTPADMIN_ADMIN_PASSWORD"
        return secrets.token_urlsafe(12), "generated"

    def _validate(self, password: str, user: Any, source: str) -> None:
        if source == "generated":
            return
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(
                f"The password from {source} is not accepted: " + " ".join(exc.messages)
            ) from None
