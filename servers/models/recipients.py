"""Accepted domains (which mail this organization receives) and local mailboxes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from smtpadmin.validators import (
    normalize_address,
    normalize_domain_pattern,
    pattern_matches,
    pattern_specificity,
)


class AcceptedDomain(models.Model):
    class Type(models.TextChoices):
        AUTHORITATIVE = "authoritative", "Authoritative"
        INTERNAL_RELAY = "internal_relay", "Internal relay"
        EXTERNAL_RELAY = "external_relay", "External relay"

    domain = models.CharField(
        max_length=255, unique=True, help_text="example.com, or *.example.com for its sub-domains"
    )
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.AUTHORITATIVE)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    audit_skip_fields = ("created_at", "modified_at")

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_domain"
            )
        ]

    def __str__(self) -> str:
        return self.domain

    def clean(self) -> None:
        try:
            self.domain = normalize_domain_pattern(self.domain)
        except ValidationError as exc:
            raise ValidationError({"domain": exc.messages}) from None
        if self.domain == "*":
            raise ValidationError(
                {"domain": "'*' would accept mail for every domain: an open relay."}
            )
        if self.is_default and self.domain.startswith("*"):
            raise ValidationError({"is_default": "The default domain cannot be a wildcard."})
        if (
            self.pk
            and self.type != self.Type.AUTHORITATIVE
            and Mailbox.objects.filter(domain=self).exists()
        ):
            raise ValidationError(
                {"type": "Mailboxes exist in this domain; only an authoritative domain has them."}
            )
        if self.pk:
            # A new name must still cover the mailboxes already in this domain.
            addresses = Mailbox.objects.filter(domain=self).values_list("address", flat=True)
            stranded = [
                a for a in addresses if not pattern_matches(self.domain, a.rpartition("@")[2])
            ]
            if stranded:
                shown = ", ".join(stranded[:3])
                raise ValidationError(
                    {"domain": f"Mailboxes exist outside '{self.domain}': {shown}."}
                )

    @classmethod
    def clear_default(cls, by: Any = None, keep: Any = None) -> None:
        """Take the default flag from the current default (there is one at most), audited;
        called in the transaction that makes another domain (``keep``, or a new one) the default."""
        from smtpadmin import audit

        for previous in cls.objects.select_for_update().filter(is_default=True).exclude(pk=keep):
            before = audit.snapshot(previous)
            previous.is_default = False
            previous.save(update_fields=["is_default", "modified_at"])
            audit.record_update(by, before, previous)

    @classmethod
    def match(
        cls, domain: str, domains: list[AcceptedDomain] | None = None
    ) -> AcceptedDomain | None:
        """The most specific accepted domain covering ``domain`` (normalised), if any."""
        candidates = [
            d
            for d in (domains if domains is not None else cls.objects.all())
            if pattern_matches(d.domain, domain)
        ]
        return max(candidates, key=lambda d: pattern_specificity(d.domain), default=None)


class Mailbox(models.Model):
    """A local recipient in an authoritative domain, delivered into a Maildir."""

    address = models.CharField(max_length=320, unique=True)
    domain = models.ForeignKey(AcceptedDomain, on_delete=models.PROTECT, related_name="mailboxes")
    display_name = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    audit_skip_fields = ("created_at", "modified_at", "domain")

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "mailboxes"
        # The relay's directory fingerprint reads the latest change every second.
        indexes = [models.Index(fields=["modified_at"], name="mailbox_modified_at")]

    def __str__(self) -> str:
        return self.address

    def clean_fields(self, exclude: Any = None) -> None:
        # The domain is derived from the address in clean(), never typed.
        super().clean_fields(exclude={*(exclude or ()), "domain"})

    def clean(self) -> None:
        try:
            # Local parts are matched case-insensitively (as every real MTA does).
            self.address = normalize_address(self.address).lower()
        except ValidationError as exc:
            raise ValidationError({"address": exc.messages}) from None
        domain_name = self.address.rpartition("@")[2]
        accepted = AcceptedDomain.match(domain_name)
        if accepted is None or accepted.type != AcceptedDomain.Type.AUTHORITATIVE:
            raise ValidationError(
                {"address": f"'{domain_name}' is not an authoritative accepted domain."}
            )
        self.domain = accepted
        if Mailbox.objects.filter(address=self.address).exclude(pk=self.pk).exists():
            raise ValidationError({"address": "A mailbox with this address already exists."})
