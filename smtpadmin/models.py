"""The organization (one row) with its global settings, and the audit log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from smtpadmin.validators import normalize_host_list, normalize_sender_pattern


def _normalize_sender_list(values: object) -> list[str]:
    if not isinstance(values, list | tuple):
        raise ValidationError("Enter a list of addresses.")
    return [normalize_sender_pattern(str(v)) for v in values]


class Organization(models.Model):
    """The one organization: global message delivery defaults and global filtering."""

    name = models.CharField(max_length=200, default="First Organization")
    # Message Delivery > Defaults (KB; null = no limit).
    sending_size_limit_kb = models.PositiveIntegerField(
        null=True, blank=True, default=10240, validators=[MinValueValidator(1)]
    )
    receiving_size_limit_kb = models.PositiveIntegerField(
        null=True, blank=True, default=10240, validators=[MinValueValidator(1)]
    )
    recipients_limit = models.PositiveIntegerField(
        null=True, blank=True, default=5000, validators=[MinValueValidator(1)]
    )
    # Message Delivery > Sender Filtering.
    blocked_senders = models.JSONField(default=list, blank=True)
    filter_blank_senders = models.BooleanField(default=False)
    # Message Delivery > Recipient Filtering.
    blocked_recipients = models.JSONField(default=list, blank=True)
    filter_unknown_recipients = models.BooleanField(default=True)
    # Message Delivery > Connection Filtering.
    global_accept_list = models.JSONField(default=list, blank=True)
    global_deny_list = models.JSONField(default=list, blank=True)
    block_list_providers = models.JSONField(default=list, blank=True)
    # Message tracking.
    message_tracking_enabled = models.BooleanField(default=True)
    subject_logging_enabled = models.BooleanField(default=False)
    tracking_retention_days = models.PositiveIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    # "Disable outbound mail" for the whole organization: every link queue shows Disabled.
    outbound_mail_disabled = models.BooleanField(default=False)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="organization_is_singleton")
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.id = 1
        super().save(*args, **kwargs)

    @classmethod
    def get(cls) -> Organization:
        organization, _ = cls.objects.get_or_create(id=1)
        return organization

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        for field in ("global_accept_list", "global_deny_list"):
            try:
                setattr(self, field, normalize_host_list(getattr(self, field), allow_domain=False))
            except ValidationError as exc:
                errors[field] = exc.messages
        for field in ("blocked_senders", "blocked_recipients"):
            try:
                setattr(self, field, _normalize_sender_list(getattr(self, field)))
            except ValidationError as exc:
                errors[field] = exc.messages
        if not isinstance(self.block_list_providers, list) or not all(
            isinstance(p, str) and p.strip() for p in self.block_list_providers
        ):
            errors["block_list_providers"] = ["Enter a list of DNS suffixes (zen.example.org)."]
        if errors:
            raise ValidationError(errors)


class AuditEntry(models.Model):
    """One changed field of one object: who, when, what, old -> new.

    Secrets are recorded as "changed", never with their value. The user is kept by name too,
    so the log outlives deleted accounts.
    """

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Changed"
        DELETE = "delete", "Deleted"
        ACTION = "action", "Action"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    object_type = models.CharField(max_length=100, db_index=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    object_repr = models.CharField(max_length=300, blank=True)
    field = models.CharField(max_length=100, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.object_repr}"


class LoginThrottle(models.Model):
    """Failed logins, shared by all web and relay processes (``smtpadmin.throttle``): one row
    per (user name, client address) pair, which locks, and one per user name (``client`` blank),
    which only slows that name down."""

    class Scope(models.TextChoices):
        CONSOLE = "console", "Console and API"
        SMTP = "smtp", "SMTP AUTH"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    username = models.CharField(max_length=250)
    client = models.CharField(max_length=250, blank=True)
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "username", "client"], name="login_throttle_one_row_per_pair"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.username}@{self.client or '*'}: {self.failures}"


class MinuteCount(models.Model):
    """How often something happened in one minute, counted by every process together
    (``smtpadmin.counters``): the dashboard's per-minute figures. Kept a week."""

    minute = models.BigIntegerField(help_text="Unix time // 60")
    name = models.CharField(max_length=60)
    # Sorted "key=value" pairs as JSON (e.g. the virtual server); "" for none.
    labels = models.CharField(max_length=400, blank=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "name", "labels"], name="minute_count_key")
        ]
        indexes = [models.Index(fields=["name", "minute"], name="minute_count_name")]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} @{self.minute}: {self.value}"


class TotalCount(models.Model):
    """The running total of a counter since the installation began (``/metrics``; it never
    goes down, whatever the pruning of the minutes)."""

    name = models.CharField(max_length=60)
    labels = models.CharField(max_length=400, blank=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="total_count_key")]

    def __str__(self) -> str:
        return f"{self.name}{self.labels}: {self.value}"
