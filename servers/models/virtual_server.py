"""The SMTP virtual server: one listener (IP, port) on one server, with the four tabs of its
property sheet (General, Access, Messages, Delivery)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q

from servers.models.security import Certificate
from servers.models.topology import Server
from smtpadmin.validators import (
    FieldErrors,
    normalize_domain,
    normalize_host_list,
    normalize_ip_list,
    normalize_smart_hosts,
    parse_host_entry,
)

PORT = [MinValueValidator(1), MaxValueValidator(65535)]
POSITIVE = [MinValueValidator(1)]
MINUTES = [MinValueValidator(1), MaxValueValidator(60 * 24 * 366)]
LIMIT = [MinValueValidator(1), MaxValueValidator(2_000_000_000)]

# The two default profiles offered when creating a virtual server, Exchange 2003 and IIS 6 SMTP.
PROFILES: dict[str, dict[str, Any]] = {
    "exchange2003": {
        "auth_anonymous": True,
        "auth_basic": True,
        "message_size_limit_kb": 4096,
        "session_size_limit_kb": None,
        "recipients_per_message": 64000,
        "retry_first_minutes": 10,
        "retry_second_minutes": 10,
        "retry_third_minutes": 10,
        "retry_subsequent_minutes": 15,
    },
    "iis6": {
        "auth_anonymous": True,
        "auth_basic": False,
        "message_size_limit_kb": 2048,
        "session_size_limit_kb": 10240,
        "recipients_per_message": 100,
        "retry_first_minutes": 15,
        "retry_second_minutes": 30,
        "retry_third_minutes": 60,
        "retry_subsequent_minutes": 240,
    },
}
PROFILE_CHOICES = [("exchange2003", "Exchange 2003"), ("iis6", "IIS 6 SMTP")]


class ListMode(models.TextChoices):
    ONLY_LISTED = "only_listed", "Only the list below"
    ALL_EXCEPT_LISTED = "all_except_listed", "All except the list below"


class TlsMode(models.TextChoices):
    NONE = "none", "No TLS"
    OPPORTUNISTIC = "opportunistic", "TLS when offered"
    REQUIRED = "required", "TLS required"


class OutboundAuth(models.TextChoices):
    ANONYMOUS = "anonymous", "Anonymous access"
    BASIC = "basic", "Basic authentication"


class VirtualServer(models.Model):
    class DesiredState(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        PAUSED = "paused", "Paused"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        PAUSED = "paused", "Paused"
        DISABLED = "disabled", "Disabled"
        UNKNOWN = "unknown", "Unknown"

    # --- General --------------------------------------------------------------------------
    server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="virtual_servers")
    name = models.CharField(max_length=100, default="Default SMTP Virtual Server")
    ip_address = models.GenericIPAddressField(
        "IP address", null=True, blank=True, help_text="Blank = (All Unassigned)"
    )
    port = models.PositiveIntegerField("TCP port", default=25, validators=PORT)
    connection_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=LIMIT, help_text="Blank = unlimited"
    )
    # So one client cannot take every slot of connection_limit; 0 or blank = unlimited.
    connection_limit_per_client = models.PositiveIntegerField(
        "Limit connections from one client address to",
        null=True,
        blank=True,
        default=20,
        validators=[MaxValueValidator(2_000_000_000)],
        help_text="Blank or 0 = unlimited",
    )
    connection_timeout_minutes = models.PositiveIntegerField(default=10, validators=MINUTES)
    logging_enabled = models.BooleanField("Enable protocol logging", default=False)
    apply_sender_filter = models.BooleanField(default=False)
    apply_recipient_filter = models.BooleanField(default=False)
    apply_connection_filter = models.BooleanField(default=False)
    desired_state = models.CharField(
        max_length=10, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    # Reported by the relay worker.
    state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    state_reason = models.CharField(max_length=300, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)

    # --- Access ---------------------------------------------------------------------------
    auth_anonymous = models.BooleanField("Anonymous access", default=True)
    auth_basic = models.BooleanField("Basic authentication (AUTH PLAIN/LOGIN)", default=True)
    auth_basic_requires_tls = models.BooleanField("Basic requires TLS encryption", default=False)
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="virtual_servers"
    )
    require_tls = models.BooleanField("Require secure channel (TLS)", default=False)
    connection_mode = models.CharField(
        max_length=20, choices=ListMode.choices, default=ListMode.ALL_EXCEPT_LISTED
    )
    connection_list = models.JSONField(default=list, blank=True)
    relay_mode = models.CharField(
        max_length=20, choices=ListMode.choices, default=ListMode.ONLY_LISTED
    )
    relay_list = models.JSONField(default=list, blank=True)
    relay_allow_authenticated = models.BooleanField(
        "Allow all computers which successfully authenticate to relay", default=True
    )

    # --- Messages -------------------------------------------------------------------------
    message_size_limit_kb = models.PositiveIntegerField(
        null=True, blank=True, default=4096, validators=LIMIT, help_text="Blank = no limit"
    )
    session_size_limit_kb = models.PositiveIntegerField(
        null=True, blank=True, validators=LIMIT, help_text="Blank = no limit"
    )
    messages_per_connection = models.PositiveIntegerField(
        null=True, blank=True, default=20, validators=LIMIT, help_text="Blank = no limit"
    )
    recipients_per_message = models.PositiveIntegerField(
        null=True, blank=True, default=64000, validators=LIMIT, help_text="Blank = no limit"
    )
    ndr_copy_to = models.EmailField("Send copy of NDR to", blank=True)
    badmail_directory = models.CharField(max_length=500, blank=True)
    unresolved_forward_host = models.CharField(
        "Forward mail with unresolved recipients to host", max_length=300, blank=True
    )

    # --- Delivery -------------------------------------------------------------------------
    retry_first_minutes = models.PositiveIntegerField(default=10, validators=MINUTES)
    retry_second_minutes = models.PositiveIntegerField(default=10, validators=MINUTES)
    retry_third_minutes = models.PositiveIntegerField(default=10, validators=MINUTES)
    retry_subsequent_minutes = models.PositiveIntegerField(default=15, validators=MINUTES)
    outbound_delay_notification_minutes = models.PositiveIntegerField(
        default=12 * 60, validators=MINUTES
    )
    outbound_expiration_minutes = models.PositiveIntegerField(
        default=2 * 24 * 60, validators=MINUTES
    )
    local_delay_notification_minutes = models.PositiveIntegerField(
        default=12 * 60, validators=MINUTES
    )
    local_expiration_minutes = models.PositiveIntegerField(default=2 * 24 * 60, validators=MINUTES)
    outbound_auth = models.CharField(
        max_length=10, choices=OutboundAuth.choices, default=OutboundAuth.ANONYMOUS
    )
    outbound_username = models.CharField(max_length=200, blank=True)
    outbound_password = models.CharField(max_length=500, blank=True)
    outbound_tls = models.CharField(max_length=15, choices=TlsMode.choices, default=TlsMode.NONE)
    outbound_tls_verify = models.BooleanField(default=True)
    outbound_connection_limit = models.PositiveIntegerField(
        null=True, blank=True, default=1000, validators=LIMIT, help_text="Blank = unlimited"
    )
    outbound_timeout_minutes = models.PositiveIntegerField(default=10, validators=MINUTES)
    outbound_per_domain_limit = models.PositiveIntegerField(
        null=True, blank=True, default=100, validators=LIMIT, help_text="Blank = unlimited"
    )
    remote_port = models.PositiveIntegerField("Outbound TCP port", default=25, validators=PORT)
    max_hop_count = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(1), MaxValueValidator(256)]
    )
    masquerade_domain = models.CharField(max_length=253, blank=True)
    fqdn = models.CharField(
        "Fully-qualified domain name", max_length=253, blank=True, help_text="Blank = server FQDN"
    )
    smart_hosts = models.CharField(max_length=1000, blank=True)
    attempt_direct_before_smart_host = models.BooleanField(default=False)
    reverse_dns_lookup = models.BooleanField("Reverse DNS lookup on incoming", default=False)
    external_dns_servers = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    audit_secret_fields = ("outbound_password",)
    # Reported by the relay worker; never by a configuration save, never audited.
    runtime_fields = ("state", "state_reason", "state_changed_at")

    class Meta:
        ordering = ["server__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "ip_address", "port"], name="virtual_server_unique_binding"
            ),
            # NULL never equals NULL in a unique index, so "All Unassigned" needs its own.
            models.UniqueConstraint(
                fields=["server", "port"],
                condition=Q(ip_address__isnull=True),
                name="virtual_server_unique_all_unassigned",
            ),
            models.CheckConstraint(
                condition=Q(port__gte=1, port__lte=65535), name="virtual_server_port_range"
            ),
            models.CheckConstraint(
                condition=Q(remote_port__gte=1, remote_port__lte=65535),
                name="virtual_server_remote_port_range",
            ),
            models.CheckConstraint(
                condition=Q(session_size_limit_kb__isnull=True)
                | Q(message_size_limit_kb__isnull=False)
                & Q(session_size_limit_kb__gte=models.F("message_size_limit_kb")),
                name="virtual_server_session_size_covers_message_size",
            ),
            models.CheckConstraint(
                condition=Q(outbound_per_domain_limit__isnull=True)
                | Q(outbound_connection_limit__isnull=True)
                | Q(outbound_per_domain_limit__lte=models.F("outbound_connection_limit")),
                name="virtual_server_per_domain_within_total",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.server.name})" if self.server_id else self.name

    @property
    def binding(self) -> str:
        if self.ip_address is None:
            return f"(All Unassigned):{self.port}"
        if ":" in self.ip_address:
            return f"[{self.ip_address}]:{self.port}"
        return f"{self.ip_address}:{self.port}"

    @property
    def effective_fqdn(self) -> str:
        return self.fqdn or (self.server.fqdn if self.server_id else "") or "localhost"

    @classmethod
    def with_profile(cls, profile: str, **fields: Any) -> VirtualServer:
        """A new (unsaved) virtual server with one of the default profiles applied."""
        if profile not in PROFILES:
            raise ValidationError({"profile": f"Unknown profile '{profile}'."})
        return cls(**{**PROFILES[profile], **fields})

    # --- validation -----------------------------------------------------------------------
    def clean(self) -> None:
        errors = FieldErrors(self)
        check = errors.normalise

        check("connection_list", normalize_host_list)
        check("relay_list", normalize_host_list)
        check("external_dns_servers", normalize_ip_list)
        check("smart_hosts", normalize_smart_hosts)
        for field in ("fqdn", "masquerade_domain"):
            if getattr(self, field):
                check(field, normalize_domain)
        if self.unresolved_forward_host:
            check("unresolved_forward_host", normalize_smart_hosts)
        if not self.ip_address:
            # A blank form field means (All Unassigned): NULL, so the binding checks see it.
            self.ip_address = None
        else:
            # Store IPv6 compressed and IPv4-mapped as plain IPv4, so uniqueness holds.
            try:
                address = ipaddress.ip_address(self.ip_address)
            except ValueError:
                # full_clean() runs clean() even when clean_fields() refused the value.
                errors.add("ip_address", "Enter a valid IPv4 or IPv6 address.")
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped
                self.ip_address = address.compressed
        # Numbers that clean_fields() refused are still raw text here: compare only numbers.
        if (
            isinstance(self.session_size_limit_kb, int)
            and isinstance(self.message_size_limit_kb, int)
            and self.session_size_limit_kb < self.message_size_limit_kb
        ):
            errors.add(
                "session_size_limit_kb",
                "The session size limit must be at least the message size limit.",
            )
        if self.session_size_limit_kb is not None and self.message_size_limit_kb is None:
            errors.add(
                "message_size_limit_kb",
                "Limit the message size too when the session size is limited.",
            )
        if (
            isinstance(self.outbound_per_domain_limit, int)
            and isinstance(self.outbound_connection_limit, int)
            and self.outbound_per_domain_limit > self.outbound_connection_limit
        ):
            errors.add(
                "outbound_per_domain_limit",
                "The per-domain limit cannot exceed the total outbound connection limit.",
            )
        if self.outbound_auth == OutboundAuth.BASIC and not self.outbound_username:
            errors.add("outbound_username", "Basic outbound authentication needs a user name.")
        if self.require_tls and not self.certificate_id:
            errors.add("require_tls", "TLS can only be required once a certificate is assigned.")
        if self.auth_basic_requires_tls and not self.certificate_id:
            errors.add(
                "auth_basic_requires_tls",
                "Basic authentication can only require TLS once a certificate is assigned.",
            )
        if not self.auth_anonymous and not self.auth_basic:
            errors.add("auth_anonymous", "Allow at least one authentication method.")
        if self.server_id and isinstance(self.port, int) and "ip_address" not in errors:
            clash = self._binding_clash()
            if clash:
                errors.add("port" if self.ip_address is None else "ip_address", clash)
        errors.raise_any()

    def _binding_clash(self) -> str:
        """Another virtual server of this server that would take the same address and port."""
        others = VirtualServer.objects.filter(server_id=self.server_id, port=self.port).exclude(
            pk=self.pk
        )
        if self.ip_address is None:
            other = others.first()
        else:
            other = others.filter(
                Q(ip_address=self.ip_address) | Q(ip_address__isnull=True)
            ).first()
        if other is None:
            return ""
        return f"'{other.name}' already listens on {other.binding} of this server."

    NAMED_ON_DELETE = 10  # connectors the refusal names
    COUNTED_ON_DELETE = 1000  # and the most it counts

    def delete_problem(self) -> str:
        """Why this virtual server may not be deleted ('' = it may): a connector would be left
        without a bridgehead."""
        connectors = self.connectors.model  # no import: connectors depends on servers
        # Count all bridgeheads, not only the join row that links this one (a filter through
        # the same relation before annotate() would count exactly that row).
        links = connectors.bridgeheads.through.objects
        others = links.filter(connector=models.OuterRef("pk")).exclude(virtualserver=self)
        # Each connector bridged here and by no other: two index probes per connector, no
        # count of every connector's bridgeheads.
        only = (
            connectors.objects.filter(
                models.Exists(links.filter(connector=models.OuterRef("pk"), virtualserver=self))
            )
            .exclude(models.Exists(others))
            .order_by("name", "pk")
            .values_list("name", flat=True)
        )
        # The first few by name and how many more: it may be 10,000 connectors.
        names = list(only[: self.NAMED_ON_DELETE + 1])
        if not names:
            return ""
        listed = ", ".join(names[: self.NAMED_ON_DELETE])
        if len(names) > self.NAMED_ON_DELETE:
            # Counted up to a bound: the exact number of 10,000 costs a probe each.
            more = only[: self.COUNTED_ON_DELETE + 1].count() - self.NAMED_ON_DELETE
            limit = self.COUNTED_ON_DELETE - self.NAMED_ON_DELETE
            listed += f" and {more} more" if more <= limit else f" and more than {limit} others"
        return (
            f"'{self}' is the only bridgehead of: {listed}. "
            "Add another bridgehead to those connectors or delete them first."
        )

    # --- state changes --------------------------------------------------------------------
    def set_desired_state(self, state: str, by: Any = None) -> bool:
        """Start / stop / pause: record the wish; the relay worker applies it. Audited."""
        from smtpadmin.audit import record_action

        if state not in self.DesiredState.values:
            raise ValidationError({"desired_state": f"Unknown state '{state}'."})
        with transaction.atomic():
            locked = VirtualServer.objects.select_for_update().get(pk=self.pk)
            old = locked.desired_state
            if old == state:
                self.desired_state = state
                return False
            VirtualServer.objects.filter(pk=self.pk).update(desired_state=state)
            self.desired_state = state
            record_action(by, self, "desired_state", old, state)
        return True

    def start(self, by: Any = None) -> bool:
        return self.set_desired_state(self.DesiredState.RUNNING, by)

    def stop(self, by: Any = None) -> bool:
        return self.set_desired_state(self.DesiredState.STOPPED, by)

    def pause(self, by: Any = None) -> bool:
        return self.set_desired_state(self.DesiredState.PAUSED, by)

    # --- relay ----------------------------------------------------------------------------
    def open_relay_reasons(self) -> list[str]:
        """Why computers on the Internet could relay through this virtual server without
        authenticating, in words for an administrator; [] when relay is closed (only computers
        that authenticate, and the computers listed, may relay)."""
        if self.relay_mode == ListMode.ALL_EXCEPT_LISTED:
            count = len(self.relay_list or [])
            others = f"the {count} listed" if count else "none: the exception list is empty"
            return [f"relay is allowed for all computers except {others}"]
        return [reason for entry in self.relay_list or [] if (reason := open_relay_entry(entry))]

    def closed_relay_list(self) -> list[str]:
        """The relay list once relay is closed: without the entries that open it. Under "all
        except the list below" the list named the computers refused, so none of them is kept
        (they must not become the ones allowed)."""
        if self.relay_mode == ListMode.ALL_EXCEPT_LISTED:
            return []
        return [entry for entry in self.relay_list or [] if not open_relay_entry(entry)]

    def close_relay(self, by: Any = None) -> bool:
        """Relay only for the computers listed (open entries dropped) and, as before, for
        those that authenticate. Audited; False when relay was closed already."""
        from smtpadmin import audit

        with transaction.atomic():
            locked = VirtualServer.objects.select_for_update().get(pk=self.pk)
            if not locked.open_relay_reasons():
                return False
            before = audit.snapshot(locked)
            locked.relay_list = locked.closed_relay_list()
            locked.relay_mode = ListMode.ONLY_LISTED
            locked.save(update_fields=["relay_mode", "relay_list", "modified_at"])
            audit.record_update(by, before, locked)
        self.relay_mode, self.relay_list = locked.relay_mode, locked.relay_list
        return True


# Networks wider than these (and not private) belong to no single organization: listing one
# for relay lets strangers relay.
_WIDEST_TRUSTED_PREFIX = {4: 8, 6: 16}
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def open_relay_entry(entry: str) -> str:
    """Why one relay-list entry opens relay to strangers ('' = it does not)."""
    try:
        kind, normal = parse_host_entry(entry)
    except ValidationError:
        return ""  # not a valid entry: it matches no client
    if kind == "network":
        network = ipaddress.ip_network(normal)
        family = f"IPv{network.version}"
        if network.prefixlen == 0:
            return f"the relay list contains {normal}, which is every {family} address"
        if isinstance(network, ipaddress.IPv6Network) and network.supernet_of(_IPV4_MAPPED):
            return (
                f"the relay list contains {normal}, which includes every IPv4 address "
                "(written as IPv4-mapped IPv6)"
            )
        if network.prefixlen < _WIDEST_TRUSTED_PREFIX[network.version] and not network.is_private:
            return (
                f"the relay list contains {normal}, which is 1/{2**network.prefixlen:,} "
                f"of all {family} addresses on the Internet"
            )
    if kind == "domain" and "." not in normal.removeprefix("*."):
        suffix = normal.removeprefix("*.")
        return (
            f"the relay list contains '{normal}', which matches every computer whose "
            f"reverse DNS name ends in .{suffix}"
        )
    return ""
