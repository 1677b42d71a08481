"""The SMTP connector (an outbound route) and its address spaces."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from servers.models import RoutingGroup, VirtualServer
from servers.models.virtual_server import OutboundAuth, TlsMode
from smtpadmin.validators import (
    FieldErrors,
    normalize_domain,
    normalize_domain_pattern,
    normalize_sender_pattern,
    normalize_smart_hosts,
    validate_schedule_grid,
)


class ScheduleMode(models.TextChoices):
    ALWAYS = "always", "Always run"
    NEVER = "never", "Never run"
    EVERY_HOUR = "every_1h", "Run every hour"
    EVERY_2_HOURS = "every_2h", "Run every 2 hours"
    EVERY_4_HOURS = "every_4h", "Run every 4 hours"
    DAILY = "daily", "Run daily at"
    CUSTOM = "custom", "Use custom schedule"


class ConnectorQuerySet(models.QuerySet["Connector"]):
    def update(self, **kwargs: Any) -> int:
        # Routing's snapshot is rebuilt when the latest modified_at moves (see
        # ``connectors.topology.configuration_fingerprint``), so a bulk change of configuration
        # moves it as a save does; delivery's down marks (runtime fields) leave it alone.
        if set(kwargs) - set(Connector.runtime_fields) and "modified_at" not in kwargs:
            kwargs["modified_at"] = timezone.now()
        return super().update(**kwargs)


class Connector(models.Model):
    class Scope(models.TextChoices):
        ORGANIZATION = "organization", "Entire organization"
        ROUTING_GROUP = "routing_group", "Routing group"

    class EtrnRequest(models.TextChoices):
        NONE = "none", "Do not send ETRN/TURN"
        ON_SEND = "on_send", "Request ETRN/TURN when sending messages"

    # --- General --------------------------------------------------------------------------
    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    routing_group = models.ForeignKey(
        RoutingGroup, on_delete=models.PROTECT, related_name="connectors"
    )
    use_dns = models.BooleanField("Use DNS to route to each address space", default=True)
    smart_hosts = models.CharField(max_length=1000, blank=True)
    bridgeheads = models.ManyToManyField(
        VirtualServer, related_name="connectors", help_text="Local bridgeheads"
    )
    # --- Address Space (entries in AddressSpace) ------------------------------------------
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.ORGANIZATION)
    allow_relay = models.BooleanField(
        "Allow messages to be relayed to these domains", default=False
    )
    # --- Delivery Restrictions ------------------------------------------------------------
    restrictions_enforced = models.BooleanField("Enforce delivery restrictions", default=False)
    accept_by_default = models.BooleanField("Messages from everyone are accepted", default=True)
    sender_exceptions = models.JSONField(default=list, blank=True)
    # --- Content Restrictions -------------------------------------------------------------
    allow_priority_high = models.BooleanField(default=True)
    allow_priority_normal = models.BooleanField(default=True)
    allow_priority_low = models.BooleanField(default=True)
    allow_system_messages = models.BooleanField(default=True)
    allow_non_system_messages = models.BooleanField(default=True)
    max_message_size_kb = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Blank = any size"
    )
    # --- Delivery Options -----------------------------------------------------------------
    schedule_mode = models.CharField(
        max_length=10, choices=ScheduleMode.choices, default=ScheduleMode.ALWAYS
    )
    schedule_daily_time = models.TimeField(null=True, blank=True)
    schedule_grid = models.CharField(max_length=672, blank=True)
    oversize_schedule_enabled = models.BooleanField(default=False)
    oversize_threshold_kb = models.PositiveIntegerField(
        default=2000, validators=[MinValueValidator(1)]
    )
    oversize_schedule_mode = models.CharField(
        max_length=10, choices=ScheduleMode.choices, default=ScheduleMode.ALWAYS
    )
    oversize_schedule_daily_time = models.TimeField(null=True, blank=True)
    oversize_schedule_grid = models.CharField(max_length=672, blank=True)
    queue_for_remote_delivery = models.BooleanField(
        "Queue mail for remote triggered delivery (ETRN)", default=False
    )
    # --- Advanced -------------------------------------------------------------------------
    send_helo = models.BooleanField("Send HELO instead of EHLO", default=False)
    outbound_auth = models.CharField(
        max_length=10, choices=OutboundAuth.choices, default=OutboundAuth.ANONYMOUS
    )
    outbound_username = models.CharField(max_length=200, blank=True)
    outbound_password = models.CharField(max_length=500, blank=True)
    tls_mode = models.CharField(max_length=15, choices=TlsMode.choices, default=TlsMode.NONE)
    tls_verify = models.BooleanField("Verify the remote certificate", default=True)
    etrn_request = models.CharField(
        max_length=10, choices=EtrnRequest.choices, default=EtrnRequest.NONE
    )
    etrn_domains = models.JSONField(default=list, blank=True)
    # --- Details --------------------------------------------------------------------------
    admin_note = models.TextField("Administrative note", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    # Set by delivery when attempts fail at the connection level; routing fails over meanwhile.
    down_until = models.DateTimeField(null=True, blank=True)
    down_reason = models.CharField(max_length=300, blank=True)

    audit_secret_fields = ("outbound_password",)
    # Set by delivery; never by a configuration save, never audited.
    runtime_fields = ("down_until", "down_reason")

    objects = ConnectorQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        # Routing's configuration fingerprint reads the latest change and the down marks
        # every second; these answer it without reading every connector.
        indexes = [
            models.Index(fields=["modified_at"], name="connector_modified_at"),
            models.Index(fields=["down_until"], name="connector_down_until"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_marked_down(self) -> bool:
        return self.down_until is not None and self.down_until > timezone.now()

    def set_address_spaces(self, spaces: Iterable[Mapping[str, Any]]) -> None:
        """Replace the address spaces with entries already checked by ``check_address_spaces``."""
        self.address_spaces.all().delete()
        AddressSpace.objects.bulk_create(
            AddressSpace(connector=self, domain=space["domain"], cost=space["cost"])
            for space in spaces
        )

    def audit_extra(self) -> dict[str, str]:
        if self.pk is None:
            return {}
        spaces = ", ".join(f"{a.domain} ({a.cost})" for a in self.address_spaces.all())
        return {"address_spaces": spaces}

    def clean(self) -> None:
        errors = FieldErrors(self)
        check = errors.normalise

        check("smart_hosts", normalize_smart_hosts)
        if not self.use_dns and not self.smart_hosts and "smart_hosts" not in errors:
            errors.add("smart_hosts", "Enter at least one smart host, or route by DNS.")
        check("sender_exceptions", _normalize_senders)
        check("etrn_domains", _normalize_domains)
        for prefix in ("", "oversize_"):
            mode = getattr(self, f"{prefix}schedule_mode")
            if mode == ScheduleMode.DAILY and getattr(self, f"{prefix}schedule_daily_time") is None:
                errors.add(f"{prefix}schedule_daily_time", "Choose the time of day.")
            if mode == ScheduleMode.CUSTOM:
                check(f"{prefix}schedule_grid", _schedule_grid)
        if not (self.allow_priority_high or self.allow_priority_normal or self.allow_priority_low):
            errors.add(
                "allow_priority_normal", "Allow at least one priority, or disable the connector."
            )
        if not (self.allow_system_messages or self.allow_non_system_messages):
            errors.add(
                "allow_non_system_messages",
                "Allow at least one message type, or disable the connector.",
            )
        if self.outbound_auth == OutboundAuth.BASIC and not self.outbound_username:
            errors.add("outbound_username", "Basic outbound authentication needs a user name.")
        errors.raise_any()


def _schedule_grid(value: str) -> str:
    validate_schedule_grid(value)
    if "1" not in value:
        raise ValidationError("The schedule never runs; choose 'Never run' instead.")
    return value


def _normalize_senders(values: object) -> list[str]:
    if not isinstance(values, list | tuple):
        raise ValidationError("Enter a list of senders.")
    return list(dict.fromkeys(normalize_sender_pattern(str(v)) for v in values))


def _normalize_domains(values: object) -> list[str]:
    if not isinstance(values, list | tuple):
        raise ValidationError("Enter a list of domains.")
    return list(dict.fromkeys(normalize_domain(str(v)) for v in values))


class AddressSpace(models.Model):
    """An SMTP address space of a connector: a domain pattern and its cost."""

    connector = models.ForeignKey(
        Connector, on_delete=models.CASCADE, related_name="address_spaces"
    )
    type = models.CharField(max_length=10, default="SMTP", editable=False)
    domain = models.CharField(max_length=255)
    cost = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "domain"], name="address_space_unique"),
            models.CheckConstraint(
                condition=Q(cost__gte=1, cost__lte=100), name="address_space_cost_range"
            ),
        ]

    def __str__(self) -> str:
        return f"SMTP:{self.domain};{self.cost}"

    def clean(self) -> None:
        try:
            self.domain = normalize_domain_pattern(self.domain)
        except ValidationError as exc:
            raise ValidationError({"domain": exc.messages}) from None


NO_ADDRESS_SPACE = "A connector needs at least one address space."


@dataclasses.dataclass
class AddressSpaceCheck:
    """The outcome of ``check_address_spaces``."""

    cleaned: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Aligned with the entries checked: each one's errors by field ({} = fine).
    row_errors: list[dict[str, list[str]]] = dataclasses.field(default_factory=list)
    error: str = ""  # about the list as a whole

    @property
    def ok(self) -> bool:
        return not self.error and not any(self.row_errors)


def check_address_spaces(entries: Sequence[Mapping[str, Any]]) -> AddressSpaceCheck:
    """The rules for a connector's address spaces, shared by the API and the console: at least
    one; each pattern valid and normalised, each cost 1-100 (default 1); no pattern twice."""
    if not entries:
        return AddressSpaceCheck(error=NO_ADDRESS_SPACE)
    result = AddressSpaceCheck()
    seen: set[str] = set()
    for entry in entries:
        if "domain" not in entry:
            # A PATCH makes the nested entries partial too; an entry still needs its domain.
            result.row_errors.append({"domain": ["This field is required."]})
            continue
        space = AddressSpace(domain=entry["domain"], cost=entry.get("cost", 1))
        try:
            space.clean_fields(exclude=["connector"])
            space.clean()
        except ValidationError as exc:
            result.row_errors.append(exc.message_dict)
            continue
        if space.domain in seen:
            result.row_errors.append({"domain": [f"'{space.domain}' is listed twice."]})
            continue
        seen.add(space.domain)
        result.row_errors.append({})
        result.cleaned.append({"domain": space.domain, "cost": space.cost})
    return result
