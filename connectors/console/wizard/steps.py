"""The wizard's steps: one form each, validated against what the steps before it chose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse

from connectors.console.wizard.choices import DEFAULT_CONNECTOR_NAME, FUNCTIONS, Choices
from connectors.console.wizard.plan import Plan
from connectors.console.wizard.relay import (
    relay_changes,
    relay_problems,
    relay_settings,
    relay_verdict,
    relaying_connectors,
)
from connectors.models import Connector, check_address_spaces
from servers.models import AcceptedDomain, Server, VirtualServer
from smtpadmin.pickers import SearchSelect
from smtpadmin.sheets import LinesField
from smtpadmin.validators import normalize_domain_pattern

# --- the steps ------------------------------------------------------------------------------


class StepForm(forms.Form):
    title: ClassVar[str]
    description: ClassVar[str] = ""
    step_template = "connectors/wizard_fields.html"

    def __init__(self, *args: Any, choices: Choices, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = choices

    def shown_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if not self[name].is_hidden]

    def contribute(self, choices: Choices) -> None:
        """Add this step's (valid) answers to ``choices``."""


class VirtualServerField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} on {obj.server.name}, {obj.binding}"


class ServerStep(StepForm):
    title = "Server and virtual server"
    description = (
        "Choose the server that will exchange mail with the Internet and its SMTP virtual "
        "server: it accepts mail from the Internet and is the bridgehead of the new connector. "
        "Before you start: the server needs a connection to the Internet, your domains need MX "
        "records pointing to it, and firewalls must let TCP port 25 through."
    )
    server = forms.ModelChoiceField(
        queryset=Server.objects.order_by("name"),
        empty_label="Choose a server…",
        widget=SearchSelect(picker="servers"),
    )
    virtual_server = VirtualServerField(
        queryset=VirtualServer.objects.select_related("server").order_by("server__name", "name"),
        label="SMTP virtual server",
        empty_label="Choose a virtual server…",
        widget=SearchSelect(picker="virtual-servers"),
    )
    close_relay = forms.BooleanField(
        required=False, label="Close relay on this virtual server as part of the wizard"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_relay: list[str] = []
        servers = list(Server.objects.order_by("name")[:2])
        if not self.is_bound and len(servers) == 1:
            self.initial.setdefault("server", servers[0].pk)
        self.fields["server"].widget.attrs.update(
            {
                # Choosing a server narrows the list of virtual servers (without a reload).
                "hx-get": reverse("connectors:internet-mail-wizard"),
                "hx-trigger": "change",
                "hx-target": "#field-virtual_server",
                "hx-select": "#field-virtual_server",
                "hx-swap": "outerHTML",
            }
        )
        chosen = self.initial.get("server")
        if not self.is_bound and chosen:
            field_ = self.fields["virtual_server"]
            assert isinstance(field_, forms.ModelChoiceField)
            queryset = VirtualServer.objects.select_related("server").filter(server_id=chosen)
            field_.queryset = queryset.order_by("name")
            only = list(queryset[:2])
            if len(only) == 1:
                self.initial.setdefault("virtual_server", only[0].pk)

    def shown_fields(self) -> list[forms.BoundField]:
        offer = bool(self.open_relay) or bool(self.data.get("close_relay"))
        return [f for f in super().shown_fields() if f.name != "close_relay" or offer]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        server, vs = cleaned.get("server"), cleaned.get("virtual_server")
        if not VirtualServer.objects.exists():
            raise ValidationError(
                "There is no SMTP virtual server yet: create one under Servers > server > "
                "Protocols > SMTP first."
            )
        if server is None or vs is None:
            return cleaned
        if vs.server_id != server.pk:
            self.add_error(
                "virtual_server",
                f"'{vs.name}' runs on server {vs.server.name}, not on {server.name}: "
                f"choose one of {server.name}'s virtual servers.",
            )
            return cleaned
        self.open_relay = vs.open_relay_reasons()
        if self.open_relay and not cleaned.get("close_relay"):
            self.add_error(
                "virtual_server",
                [
                    f"'{vs.name}' is an open relay: anyone on the Internet could send mail "
                    "through it to any domain, and it would soon be on every block list. The "
                    "wizard does not connect an open relay to the Internet.",
                    *(f"Why: {reason}." for reason in self.open_relay),
                    "Close relay on the virtual server's Access tab (Relay), or tick “Close "
                    "relay on this virtual server as part of the wizard”: the Relay check step "
                    "shows what changes.",
                ],
            )
        return cleaned

    def contribute(self, choices: Choices) -> None:
        choices.virtual_server = self.cleaned_data["virtual_server"]


class FunctionStep(StepForm):
    title = "Send, receive or both"
    description = "What this virtual server does with Internet mail."
    function = forms.ChoiceField(
        choices=FUNCTIONS, initial="both", widget=forms.RadioSelect, label="This server will"
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        vs = self.choices.virtual_server
        if vs and cleaned.get("function") in ("receive", "both") and not vs.auth_anonymous:
            self.add_error(
                "function",
                [
                    f"'{vs.name}' does not allow anonymous access, so it cannot receive Internet "
                    "mail: mail servers on the Internet never log in before they deliver.",
                    "Turn on anonymous access on its Access tab (Authentication), or choose "
                    "“Send Internet mail only”.",
                ],
            )
        return cleaned

    def contribute(self, choices: Choices) -> None:
        choices.function = self.cleaned_data["function"]


class DomainsStep(StepForm):
    title = "Accepted domains"
    description = (
        "The domains this organization receives Internet mail for. A domain that is accepted "
        "already is used as it is, not created twice."
    )
    domains = LinesField(
        label="Domains to receive mail for",
        help_text="One per line: example.com, or *.example.com for its sub-domains.",
        error_messages={"required": "Enter at least one domain to receive mail for."},
    )
    type = forms.ChoiceField(
        choices=AcceptedDomain.Type.choices,
        initial=AcceptedDomain.Type.AUTHORITATIVE,
        widget=forms.RadioSelect,
        label="Type of the new domains",
        help_text="Authoritative: delivered to local mailboxes, unknown recipients refused. "
        "Internal relay: accepted and routed on by connector. External relay: accepted for "
        "relay only (a backup MX, say).",
    )
    default_domain = forms.CharField(
        required=False,
        label="Default domain",
        help_text="There is no default accepted domain yet: which of the domains above becomes "
        "it. Blank = the first one listed that is not a wildcard.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.has_default = AcceptedDomain.objects.filter(is_default=True).exists()
        if self.has_default:
            del self.fields["default_domain"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("type") or AcceptedDomain.Type.AUTHORITATIVE
        patterns: list[str] = []
        errors: list[str] = []
        for line in cleaned.get("domains") or []:
            try:
                pattern = normalize_domain_pattern(line)
                new = not AcceptedDomain.objects.filter(domain=pattern).exists()
                if pattern not in patterns and new:
                    AcceptedDomain(domain=pattern, type=kind).full_clean(exclude=["is_default"])
            except ValidationError as exc:
                errors.extend(exc.messages)
                continue
            if pattern not in patterns:
                patterns.append(pattern)
        if errors:
            self.add_error("domains", errors)
            return cleaned
        cleaned["patterns"] = patterns
        cleaned["default"] = "" if self.has_default else self._default(cleaned, patterns)
        return cleaned

    def _default(self, cleaned: dict[str, Any], patterns: list[str]) -> str:
        typed = (cleaned.get("default_domain") or "").strip()
        if not typed:
            return next((p for p in patterns if not p.startswith("*")), "")
        try:
            chosen = normalize_domain_pattern(typed)
        except ValidationError as exc:
            self.add_error("default_domain", exc.messages)
            return ""
        if chosen not in patterns or chosen.startswith("*"):
            self.add_error(
                "default_domain", "Choose one of the domains listed above (not a wildcard)."
            )
        return chosen

    def contribute(self, choices: Choices) -> None:
        choices.domains = self.cleaned_data["patterns"]
        choices.domain_type = self.cleaned_data["type"]
        choices.default_domain = self.cleaned_data["default"]


class ConnectorStep(StepForm):
    title = "Outbound connector"
    description = (
        "The SMTP connector that sends mail to the Internet, with the chosen virtual server as "
        "its bridgehead."
    )
    name = forms.CharField(max_length=200, initial=DEFAULT_CONNECTOR_NAME, label="Connector name")
    route = forms.ChoiceField(
        choices=[
            ("dns", "Use DNS to route to each domain (MX records)"),
            ("smart_host", "Forward all mail through smart hosts"),
        ],
        initial="dns",
        widget=forms.RadioSelect,
        label="Route mail",
    )
    smart_hosts = forms.CharField(
        required=False,
        max_length=1000,
        label="Smart hosts",
        help_text="relay.example.net or [192.0.2.25], each with an optional :port; several "
        "separated by ';'. Only with “Forward all mail through smart hosts”.",
    )
    address_space = forms.ChoiceField(
        choices=[
            ("all", "Allow Internet mail to all domains (*)"),
            ("listed", "Only to the domains listed below"),
        ],
        initial="all",
        widget=forms.RadioSelect,
        label="Send mail to",
    )
    domains = LinesField(
        required=False,
        label="Domains",
        help_text="One per line: example.com or *.example.net. Only with “Only to the domains "
        "listed below”.",
    )
    cost = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=1,
        help_text="1-100. Among connectors for the same domains the lowest cost is used; an "
        "equal cost shares the load.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        vs = self.choices.virtual_server
        name = cleaned.get("name", "")
        if vs is None or not name:
            return cleaned
        existing = Connector.objects.filter(name__iexact=name).first()
        if existing is not None:
            self.add_error(
                "name",
                f"A connector named '{existing.name}' exists already. Choose another name, or "
                "change that connector on its property sheet instead.",
            )
        use_dns = cleaned.get("route") != "smart_host"
        connector = Connector(
            name=name,
            routing_group=vs.server.routing_group,
            use_dns=use_dns,
            smart_hosts="" if use_dns else cleaned.get("smart_hosts", ""),
        )
        try:
            connector.full_clean(exclude=["name"] if existing else None)
        except ValidationError as exc:
            for name_, errors in exc.message_dict.items():
                self.add_error(name_ if name_ in self.fields else None, errors)
        cleaned["connector"] = connector
        cleaned["spaces"] = self._spaces(cleaned)
        return cleaned

    def _spaces(self, cleaned: dict[str, Any]) -> list[dict[str, Any]]:
        cost = cleaned.get("cost")
        if cost is None:
            return []
        if cleaned.get("address_space") == "all":
            entries = [{"domain": "*", "cost": cost}]
        elif not cleaned.get("domains"):
            self.add_error(
                "domains", "List at least one domain, or allow Internet mail to all domains."
            )
            return []
        else:
            entries = [{"domain": line, "cost": cost} for line in cleaned["domains"]]
        checked = check_address_spaces(entries)
        problems = [m for row in checked.row_errors for ms in row.values() for m in ms]
        if problems or checked.error:
            self.add_error("domains", problems or [checked.error])
        return checked.cleaned

    def contribute(self, choices: Choices) -> None:
        choices.connector = self.cleaned_data["connector"]
        choices.address_spaces = self.cleaned_data["spaces"]


class RelayStep(StepForm):
    title = "Relay check"
    description = (
        "Mail from the Internet for your accepted domains is always accepted. Anything else is "
        "relay, and only computers that authenticate, or that are listed, may relay."
    )
    step_template = "connectors/wizard_relay.html"
    tighten = forms.BooleanField(
        required=False,
        initial=True,
        label="Close relay: allow it only for computers that authenticate and the computers listed",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        vs = self.choices.virtual_server
        assert vs is not None
        self.connectors = relaying_connectors()
        self.problems = relay_problems(vs, self.connectors)
        if not self.problems:
            del self.fields["tighten"]
        self.settings = relay_settings(vs)
        self.verdict = relay_verdict(vs)
        self.changes = relay_changes(vs) if self.problems else []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.problems and not cleaned.get("tighten"):
            self.add_error(
                "tighten",
                "The wizard never leaves an open relay: tick this to close relay, or cancel the "
                "wizard and close it on the virtual server's Access tab (Relay).",
            )
        return cleaned

    def contribute(self, choices: Choices) -> None:
        choices.tighten = bool(self.problems)


class SummaryStep(StepForm):
    title = "Summary"
    description = "Nothing has been changed yet. Finish makes all of these changes at once."
    step_template = "connectors/wizard_summary.html"
    plan_digest = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = Plan(self.choices)
        self.fields["plan_digest"].initial = self.plan.digest


@dataclass(frozen=True)
class Step:
    key: str
    form: type[StepForm]
    applies: Callable[[Choices], bool] = lambda choices: True


STEPS = [
    Step("server", ServerStep),
    Step("function", FunctionStep),
    # Until the function is chosen, both are expected (the default is "both").
    Step("domains", DomainsStep, lambda c: c.function != "send"),
    Step("connector", ConnectorStep, lambda c: c.function != "receive"),
    Step("relay", RelayStep),
    Step("summary", SummaryStep),
]
