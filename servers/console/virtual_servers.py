"""The SMTP virtual server's property sheet (General, Access, Messages, Delivery), its Start /
Stop / Pause buttons and its deletion (its Current Sessions are in ``sessions``)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django import forms
from django.contrib import messages
from django.db import models
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views import View

from servers.console.common import safe_next, virtual_server_status
from servers.models import VirtualServer
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action, DeleteConfirm, first_of
from smtpadmin.navigation import SelectsNode
from smtpadmin.sheets import Group, PropertySheet, SheetForm, Tab

# Button label and model method per desired state, in ESM's toolbar order.
STATE_ACTIONS = [
    ("start", "Start", "running"),
    ("stop", "Stop", "stopped"),
    ("pause", "Pause", "paused"),
]


def state_actions(virtual_server: VirtualServer) -> list[Action]:
    """The buttons that would change the desired state (the current one has none)."""
    return [
        Action(label, reverse(f"servers:virtual-server-{verb}", args=[virtual_server.pk]), "post")
        for verb, label, state in STATE_ACTIONS
        if virtual_server.desired_state != state
    ]


class VirtualServerForm(SheetForm):
    """The outbound password is write-only: never rendered, blank keeps it, a box clears it."""

    outbound_password = forms.CharField(
        label="Password",
        required=False,
        max_length=500,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_outbound_password = forms.BooleanField(label="Remove the stored password", required=False)

    class Meta:
        widgets = {
            "connection_mode": forms.RadioSelect,
            "relay_mode": forms.RadioSelect,
            "outbound_auth": forms.RadioSelect,
        }
        # ESM's wording where the model's field names are terse.
        labels = {
            "connection_limit": "Limit number of connections to",
            "connection_limit_per_client": "Limit number of connections from one address to",
            "connection_timeout_minutes": "Connection time-out (minutes)",
            "apply_sender_filter": "Apply Sender Filter",
            "apply_recipient_filter": "Apply Recipient Filter",
            "apply_connection_filter": "Apply Connection Filter",
            "connection_mode": "Grant access to",
            "connection_list": "Computers",
            "relay_mode": "Allow relay for",
            "relay_list": "Computers",
            "message_size_limit_kb": "Limit message size to (KB)",
            "session_size_limit_kb": "Limit session size to (KB)",
            "messages_per_connection": "Limit number of messages per connection to",
            "recipients_per_message": "Limit number of recipients per message to",
            "badmail_directory": "Badmail directory",
            "retry_first_minutes": "First retry interval (minutes)",
            "retry_second_minutes": "Second retry interval (minutes)",
            "retry_third_minutes": "Third retry interval (minutes)",
            "retry_subsequent_minutes": "Subsequent retry interval (minutes)",
            "outbound_delay_notification_minutes": "Delay notification (minutes)",
            "outbound_expiration_minutes": "Expiration time-out (minutes)",
            "local_delay_notification_minutes": "Delay notification (minutes)",
            "local_expiration_minutes": "Expiration time-out (minutes)",
            "outbound_auth": "Authentication",
            "outbound_username": "User name",
            "outbound_tls": "TLS encryption",
            "outbound_tls_verify": "Verify the remote server's certificate",
            "outbound_connection_limit": "Limit number of connections to",
            "outbound_timeout_minutes": "Time-out (minutes)",
            "outbound_per_domain_limit": "Limit number of connections per domain to",
            "remote_port": "TCP port",
            "max_hop_count": "Maximum hop count",
            "masquerade_domain": "Masquerade domain",
            "smart_hosts": "Smart host",
            "attempt_direct_before_smart_host": (
                "Attempt direct delivery before sending to smart host"
            ),
            "reverse_dns_lookup": "Perform reverse DNS lookup on incoming messages",
            "external_dns_servers": "External DNS servers",
        }
        help_texts = {"external_dns_servers": "One IP address per line; blank = the system's."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The stored secret must not reach the page, not even as a widget's initial value.
        self.initial["outbound_password"] = ""
        stored = bool(self.instance.outbound_password)
        self.fields["outbound_password"].help_text = (
            "A password is stored; leave blank to keep it." if stored else "No password is stored."
        )
        if "certificate" in self.fields:
            self.fields["certificate"].help_text = "STARTTLS is offered once a certificate is set."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        new = cleaned.get("outbound_password", "")
        if cleaned.get("clear_outbound_password"):
            if new:
                self.add_error(
                    "clear_outbound_password", "Either type a new password or remove it, not both."
                )
            cleaned["outbound_password"] = ""
        elif not new:
            cleaned["outbound_password"] = self.instance.outbound_password
        return cleaned


class VirtualServerSheet(SelectsNode, PropertySheet):
    model = VirtualServer
    base_form = VirtualServerForm
    tabs = [
        Tab(
            "General",
            (
                "name",
                "ip_address",
                "port",
                "connection_limit",
                "connection_limit_per_client",
                "connection_timeout_minutes",
                "logging_enabled",
            ),
            groups=(
                Group(
                    "Filtering",
                    ("apply_sender_filter", "apply_recipient_filter", "apply_connection_filter"),
                    "The organization's filters (Global Settings > Message Delivery).",
                ),
            ),
        ),
        Tab(
            "Access",
            groups=(
                Group(
                    "Authentication", ("auth_anonymous", "auth_basic", "auth_basic_requires_tls")
                ),
                Group("Secure communication", ("certificate", "require_tls")),
                Group(
                    "Connection control",
                    ("connection_mode", "connection_list"),
                    "One IP address, subnet (CIDR) or domain (reverse DNS) per line.",
                ),
                Group(
                    "Relay restrictions",
                    ("relay_mode", "relay_list", "relay_allow_authenticated"),
                    "Mail to accepted domains is always accepted; anything else is relay.",
                ),
            ),
        ),
        Tab(
            "Messages",
            (
                "message_size_limit_kb",
                "session_size_limit_kb",
                "messages_per_connection",
                "recipients_per_message",
                "ndr_copy_to",
                "badmail_directory",
                "unresolved_forward_host",
            ),
        ),
        Tab(
            "Delivery",
            groups=(
                Group(
                    "Outbound",
                    (
                        "retry_first_minutes",
                        "retry_second_minutes",
                        "retry_third_minutes",
                        "retry_subsequent_minutes",
                        "outbound_delay_notification_minutes",
                        "outbound_expiration_minutes",
                    ),
                ),
                Group(
                    "Local",
                    ("local_delay_notification_minutes", "local_expiration_minutes"),
                ),
                Group(
                    "Outbound Security",
                    (
                        "outbound_auth",
                        "outbound_username",
                        "outbound_password",
                        "clear_outbound_password",
                        "outbound_tls",
                        "outbound_tls_verify",
                    ),
                ),
                Group(
                    "Outbound connections",
                    (
                        "outbound_connection_limit",
                        "outbound_timeout_minutes",
                        "outbound_per_domain_limit",
                        "remote_port",
                    ),
                ),
                Group(
                    "Advanced",
                    (
                        "max_hop_count",
                        "masquerade_domain",
                        "fqdn",
                        "smart_hosts",
                        "attempt_direct_before_smart_host",
                        "reverse_dns_lookup",
                        "external_dns_servers",
                    ),
                    "Smart hosts: host, [1.2.3.4], each with an optional :port, separated by ';'.",
                ),
            ),
        ),
    ]

    @cached_property
    def virtual_server(self) -> VirtualServer:
        return get_object_or_404(
            VirtualServer.objects.select_related("server", "certificate"), pk=self.kwargs["pk"]
        )

    def get_object(self) -> VirtualServer:
        return self.virtual_server

    def selected_node(self) -> str:
        return f"vs-{self.virtual_server.pk}"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:virtual-server", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        vs = self.virtual_server
        return [
            ("Server", vs.server.name),
            ("Binding", vs.binding),
            ("Desired state", vs.get_desired_state_display()),
            ("Actual state", virtual_server_status(vs)[1]),
            ("State changed", vs.state_changed_at),
        ]

    def actions(self) -> list[Action]:
        vs = self.virtual_server
        return [
            *state_actions(vs),
            Action("Delete", reverse("servers:virtual-server-delete", args=[vs.pk])),
        ]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"{self.virtual_server.name} Properties"
        return context


class VirtualServerStateChange(RoleRequiredMixin, View):
    """Start / Stop / Pause: sets the desired state (audited); the relay worker applies it."""

    http_method_names = ["post"]
    verb: str = ""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        virtual_server = get_object_or_404(VirtualServer.objects.select_related("server"), pk=pk)
        changed = getattr(virtual_server, self.verb)(by=request.user)
        wish = virtual_server.get_desired_state_display().lower()
        if changed:
            messages.success(request, f"{virtual_server}: {wish} requested.")
        else:
            messages.info(request, f"{virtual_server} is already set to {wish}.")
        return redirect(
            safe_next(request, reverse("servers:virtual-server", args=[virtual_server.pk]))
        )


class VirtualServerDelete(SelectsNode, DeleteConfirm):
    """Refused while it is a connector's only bridgehead; its other links are listed."""

    model = VirtualServer

    def get_object(self) -> VirtualServer:
        return get_object_or_404(
            VirtualServer.objects.select_related("server"), pk=self.kwargs["pk"]
        )

    def selected_node(self) -> str:
        return f"vs-{self.kwargs['pk']}"

    def links(self, instance: VirtualServer) -> list[str]:
        """The first connectors and credentials by name, with how many more (a virtual
        server may be the bridgehead of 10,000 connectors)."""
        # The connectors in name order, each probed in the join table (the database walks
        # the name index and stops after a page), and the count from the join table alone.
        bridged = instance.connectors.through.objects.filter(virtualserver=instance)
        names = (
            instance.connectors.model.objects.filter(
                Exists(bridged.filter(connector=OuterRef("pk")))
            )
            .order_by("name", "pk")
            .values_list("name", flat=True)
        )
        connectors = first_of(
            names, lambda name: f"Connector: {name} (bridgehead)", count=bridged.count
        )
        # A credential limited to this virtual server alone is limited to none afterwards,
        # and "none selected" means "all": say so before it happens.
        credentials = first_of(
            instance.credentials.annotate(servers=models.Count("virtual_servers")).order_by(
                "username", "pk"
            ),
            lambda c: (
                f"SMTP credential: {c.username}"
                + (" (then accepted by every virtual server)" if c.servers == 1 else "")
            ),
        )
        return connectors + credentials

    def success_url(self, instance: models.Model) -> str:
        assert isinstance(instance, VirtualServer)
        return reverse("servers:smtp", args=[instance.server_id])
