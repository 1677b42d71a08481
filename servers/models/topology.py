"""Routing groups and servers (hosts that run a relay worker)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from smtpadmin.validators import normalize_domain


class RoutingGroup(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def first(cls) -> RoutingGroup:
        group, _ = cls.objects.get_or_create(name="First Routing Group")
        return group


class Server(models.Model):
    """A host running ``manage.py runrelay --server NAME``; its status comes from the heartbeat."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        NOT_RESPONDING = "not_responding", "Not responding"
        NEVER_SEEN = "never_seen", "Never seen"

    name = models.CharField(max_length=100, unique=True)
    fqdn = models.CharField("FQDN", max_length=253, blank=True)
    routing_group = models.ForeignKey(
        RoutingGroup, on_delete=models.PROTECT, related_name="servers"
    )
    drop_directory = models.CharField(
        max_length=500,
        blank=True,
        help_text="Where local mailboxes' Maildirs live; blank = var/maildrop/<server name>.",
    )
    # Written by the relay worker's heartbeat.
    version = models.CharField(max_length=50, blank=True)
    address = models.CharField(max_length=100, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Written by the relay worker's heartbeat; never by a configuration save, never audited.
    runtime_fields = ("version", "address", "last_seen")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.fqdn:
            try:
                self.fqdn = normalize_domain(self.fqdn)
            except ValidationError as exc:
                raise ValidationError({"fqdn": exc.messages}) from None

    @property
    def status(self) -> str:
        if self.last_seen is None:
            return self.Status.NEVER_SEEN
        timeout = timedelta(seconds=settings.SMTPADMIN_HEARTBEAT_TIMEOUT)
        if timezone.now() - self.last_seen > timeout:
            return self.Status.NOT_RESPONDING
        return self.Status.RUNNING

    @property
    def effective_drop_directory(self) -> str:
        return self.drop_directory or str(settings.VAR_DIR / "maildrop" / self.name)

    def heartbeat(self, **facts: Any) -> None:
        """Called by the relay worker; not audited (it is state, not configuration)."""
        Server.objects.filter(pk=self.pk).update(last_seen=timezone.now(), **facts)
