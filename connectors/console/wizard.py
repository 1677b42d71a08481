"""The Internet Mail Wizard (SPEC section 7): a guided setup that picks a server and one of its
SMTP virtual servers, sending / receiving / both, the accepted domains to receive for, an
outbound connector (all domains or some, by DNS or smart hosts), checks that relay stays
closed, shows a summary of every change, and makes them all in one transaction, audited.

Each step is a form validated against what the steps before it chose; the answers live in the
session (server-side). Finish validates every step again, with the virtual server locked, and
compares the plan with the summary the administrator saw: a change made meanwhile by someone
else stops the wizard instead of being trampled, and nothing is written unless everything is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from django.views.generic import TemplateView

from connectors.models import Connector, check_address_spaces
from servers.models import AcceptedDomain, Server, VirtualServer
from servers.models.virtual_server import ListMode
from smtpadmin import audit
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.navigation import Node
from smtpadmin.roles import Role
from smtpadmin.sheets import LinesField
from smtpadmin.validators import normalize_domain_pattern

NAV_KEY = "internet-mail-wizard"
SESSION_KEY = "internet_mail_wizard"
DONE_KEY = "internet_mail_wizard_done"
DEFAULT_CONNECTOR_NAME = "Internet Mail Connector"
FUNCTIONS = [
    ("both", "Send and receive Internet mail"),
    ("send", "Send Internet mail only (an outbound connector)"),
    ("receive", "Receive Internet mail only (accepted domains)"),
]

logger = logging.getLogger(__name__)


@dataclass
class Choices:
    """What the steps chose so far; each valid step adds its answers."""

    virtual_server: VirtualServer | None = None
    function: str = ""
    domains: list[str] = field(default_factory=list)
    domain_type: str = AcceptedDomain.Type.AUTHORITATIVE
    default_domain: str = ""  # "" = leave the default domain as it is
    connector: Connector | None = None  # validated, not saved
    address_spaces: list[dict[str, Any]] = field(default_factory=list)
    tighten: bool = False

    @property
    def receives(self) -> bool:
        return self.function in ("receive", "both")

    @property
    def sends(self) -> bool:
        return self.function in ("send", "both")


def relaying_connectors() -> list[Connector]:
    """Connectors that let anyone relay to every domain (address space '*')."""
    return list(Connector.objects.filter(allow_relay=True, address_spaces__domain="*").distinct())


def relay_problems(vs: VirtualServer, connectors: list[Connector]) -> list[str]:
    """Why relay is open, for the virtual server and the organization's connectors."""
    return vs.open_relay_reasons() + [
        f"connector '{c.name}' allows messages to be relayed to every domain (address space *)"
        for c in connectors
    ]


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
        queryset=Server.objects.order_by("name"), empty_label="Choose a server…"
    )
    virtual_server = VirtualServerField(
        queryset=VirtualServer.objects.select_related("server").order_by("server__name", "name"),
        label="SMTP virtual server",
        empty_label="Choose a virtual server…",
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


def relay_settings(vs: VirtualServer) -> list[tuple[str, str]]:
    return [
        ("Allow relay for", ListMode(vs.relay_mode).label),
        ("Computers", ", ".join(vs.relay_list) or "(none)"),
        (
            "Computers that authenticate",
            "may relay" if vs.relay_allow_authenticated else "may not relay",
        ),
    ]


def relay_verdict(vs: VirtualServer) -> str:
    """Who may relay once relay is closed, in a sentence's words."""
    listed = len(vs.closed_relay_list())
    computers = f"the {listed} computer{'s' if listed != 1 else ''} listed"
    if vs.relay_allow_authenticated:
        who = "computers that authenticate" + (f" and {computers}" if listed else "")
    else:
        who = computers if listed else ""
    return f"only {who} may relay" if who else "no computer may relay"


def relay_changes(vs: VirtualServer) -> list[tuple[str, str, str]]:
    """(setting, old, new) when relay is closed."""
    changes = []
    if vs.relay_mode != ListMode.ONLY_LISTED:
        changes.append(
            ("Allow relay for", ListMode(vs.relay_mode).label, ListMode.ONLY_LISTED.label)
        )
    closed = vs.closed_relay_list()
    if closed != list(vs.relay_list):
        changes.append(
            ("Computers", ", ".join(vs.relay_list) or "(none)", ", ".join(closed) or "(none)")
        )
    return changes


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


# --- the plan -------------------------------------------------------------------------------


@dataclass
class Change:
    verb: str  # Create, Change, Keep
    kind: str
    name: str
    details: list[tuple[str, str]] = field(default_factory=list)


class Plan:
    """Everything Finish will do, described for the summary and then done."""

    def __init__(self, choices: Choices) -> None:
        assert choices.virtual_server is not None
        self.choices = choices
        self.vs = choices.virtual_server
        self.new_domains: list[AcceptedDomain] = []
        self.kept_domains: list[AcceptedDomain] = []
        self.make_default: AcceptedDomain | None = None
        for pattern in choices.domains:
            existing = AcceptedDomain.objects.filter(domain=pattern).first()
            if existing is None:
                self.new_domains.append(
                    AcceptedDomain(
                        domain=pattern,
                        type=choices.domain_type,
                        is_default=pattern == choices.default_domain,
                    )
                )
            elif pattern == choices.default_domain and not existing.is_default:
                self.make_default = existing
            else:
                self.kept_domains.append(existing)
        self.relay_changes = relay_changes(self.vs) if choices.tighten else []
        self.closed_connectors = relaying_connectors() if choices.tighten else []
        self.changes = self._describe()
        self.digest = hashlib.sha256(
            json.dumps([asdict(c) for c in self.changes], sort_keys=True).encode()
        ).hexdigest()

    def _describe(self) -> list[Change]:
        vs = self.vs
        changes = []
        for domain in self.new_domains:
            details = [("Type", domain.get_type_display())]
            if domain.is_default:
                details.append(("Default domain", "yes"))
            changes.append(Change("Create", "Accepted domain", domain.domain, details))
        if self.make_default is not None:
            changes.append(
                Change("Change", "Accepted domain", str(self.make_default), [("Default", "yes")])
            )
        for domain in self.kept_domains:
            details = [
                ("Type", domain.get_type_display()),
                ("Status", "accepted already; unchanged"),
            ]
            changes.append(Change("Keep", "Accepted domain", domain.domain, details))
        connector = self.choices.connector
        if connector is not None:
            route = (
                "DNS (MX records)" if connector.use_dns else f"smart hosts {connector.smart_hosts}"
            )
            spaces = ", ".join(
                f"SMTP:{space['domain']};{space['cost']}" for space in self.choices.address_spaces
            )
            details = [
                ("Route", route),
                ("Address space", spaces),
                ("Local bridgehead", f"{vs.name} ({vs.server.name})"),
                ("Routing group", str(connector.routing_group)),
                ("Relay to these domains", "not allowed"),
            ]
            changes.append(Change("Create", "SMTP connector", connector.name, details))
        if self.relay_changes:
            details = [(setting, f"{old} → {new}") for setting, old, new in self.relay_changes]
            changes.append(Change("Change", "Virtual server", str(vs), details))
        else:
            relay = f"stays closed: {relay_verdict(vs)}"
            changes.append(Change("Keep", "Virtual server", str(vs), [("Relay", relay)]))
        for closed in self.closed_connectors:
            details = [("Allow messages to be relayed to these domains", "yes → no")]
            changes.append(Change("Change", "SMTP connector", closed.name, details))
        return changes

    def apply(self, user: Any) -> list[dict[str, str]]:
        """Make the changes (inside the caller's transaction), audited; what was done."""
        done: list[dict[str, str]] = []
        vs = self.vs
        if self.choices.tighten and vs.close_relay(by=user):
            url = reverse("servers:virtual-server", args=[vs.pk])
            done.append({"text": f"Closed relay on {vs}", "url": url})
        for relaying in self.closed_connectors:
            locked = Connector.objects.select_for_update().get(pk=relaying.pk)
            before = audit.snapshot(locked)
            locked.allow_relay = False
            locked.save(update_fields=["allow_relay", "modified_at"])
            audit.record_update(user, before, locked)
            text = f"Stopped connector {locked.name} relaying to every domain"
            done.append({"text": text, "url": reverse("connectors:connector", args=[locked.pk])})
        if self.make_default is not None:
            before = audit.snapshot(self.make_default)
            self.make_default.is_default = True
            self.make_default.full_clean()
            self.make_default.save(update_fields=["is_default", "modified_at"])
            audit.record_update(user, before, self.make_default)
            done.append({"text": f"Made {self.make_default} the default accepted domain"})
        for domain in self.new_domains:
            domain.full_clean()
            domain.save()
            audit.record_create(user, domain)
            url = reverse("servers:accepted-domain", args=[domain.pk])
            done.append({"text": f"Created accepted domain {domain}", "url": url})
        connector = self.choices.connector
        if connector is not None:
            connector.full_clean()
            connector.save()
            connector.bridgeheads.set([vs])
            connector.set_address_spaces(self.choices.address_spaces)
            audit.record_create(user, connector)  # with its bridgehead and address spaces
            url = reverse("connectors:connector", args=[connector.pk])
            done.append({"text": f"Created SMTP connector {connector}", "url": url})
        return done


def notes(choices: Choices) -> list[str]:
    """What the administrator should know about the choices (nothing here stops the wizard)."""
    vs = choices.virtual_server
    if vs is None:
        return []
    server, said = vs.server, []
    if server.status == Server.Status.NEVER_SEEN:
        said.append(
            f"Server {server.name} has never reported: no relay worker runs for it yet "
            f"(manage.py runrelay --server {server.name}), and no mail flows until one does."
        )
    elif server.status == Server.Status.NOT_RESPONDING:
        said.append(f"Server {server.name} is not responding: its relay worker must run.")
    if vs.desired_state == VirtualServer.DesiredState.STOPPED:
        said.append(f"'{vs.name}' is stopped: start it after the wizard, or no mail flows.")
    elif vs.desired_state == VirtualServer.DesiredState.PAUSED:
        said.append(f"'{vs.name}' is paused: it refuses new connections until it is started.")
    if vs.state == VirtualServer.State.DISABLED:
        why = f" ({vs.state_reason})" if vs.state_reason else ""
        said.append(f"'{vs.name}' is disabled{why}: it cannot start until that is fixed.")
    if choices.receives:
        said.extend(_receive_notes(vs))
    if choices.sends:
        said.extend(_send_notes(vs, choices))
    return said


def _receive_notes(vs: VirtualServer) -> list[str]:
    said = []
    if vs.port != 25:
        said.append(
            f"'{vs.name}' listens on port {vs.port}. Mail servers on the Internet deliver to "
            "port 25 only: it receives Internet mail only if a firewall or router forwards "
            "port 25 to it."
        )
    if vs.ip_address and ipaddress.ip_address(vs.ip_address).is_loopback:
        said.append(
            f"'{vs.name}' listens on {vs.ip_address} (this computer only): no other computer "
            "can reach it. Choose (All Unassigned) or a public address on its General tab."
        )
    if vs.connection_mode == ListMode.ONLY_LISTED:
        said.append(
            f"Only the computers on the connection list of '{vs.name}' may connect: other mail "
            "servers on the Internet are turned away."
        )
    if vs.require_tls:
        said.append(f"'{vs.name}' requires TLS: servers that do not use STARTTLS cannot deliver.")
    return said


def _send_notes(vs: VirtualServer, choices: Choices) -> list[str]:
    said = []
    if not vs.relay_allow_authenticated and not vs.closed_relay_list():
        said.append(
            f"No computer may relay through '{vs.name}', so clients cannot send Internet mail "
            "through it: let them authenticate, or list them for relay, on its Access tab."
        )
    patterns = {space["domain"]: space["cost"] for space in choices.address_spaces}
    others = Connector.objects.filter(address_spaces__domain__in=patterns).prefetch_related(
        "address_spaces"
    )
    for other in others.distinct():
        for space in other.address_spaces.all():
            if space.domain not in patterns:
                continue
            how = (
                "mail is shared between the two (equal cost)"
                if space.cost == patterns[space.domain]
                else "the lower cost is used, the other only when it is down"
            )
            said.append(
                f"Connector '{other.name}' sends mail for '{space.domain}' too "
                f"(cost {space.cost}): {how}."
            )
    return said


# --- walking the steps ----------------------------------------------------------------------

Answers = dict[str, dict[str, list[str]]]


@dataclass
class StepState:
    step: Step
    form: StepForm
    choices: Choices  # the answers of the steps before this one
    done: bool


def walk(answers: Answers) -> list[StepState]:
    """The steps that apply, in order, each bound to its saved answers and validated against
    the steps before it. The walk stops at the first step without a (valid) answer."""
    choices = Choices()
    states = []
    for step in STEPS:
        if not step.applies(choices):
            continue
        data = answers.get(step.key)
        before = replace(choices)
        form = step.form(MultiValueDict(data) if data is not None else None, choices=before)
        done = data is not None and form.is_valid()
        states.append(StepState(step, form, before, done))
        if not done:
            break
        form.contribute(choices)
    return states


def wizard_nodes(user: Any) -> list[Node]:
    url = reverse("connectors:internet-mail-wizard")
    return [Node(NAV_KEY, "Internet Mail Wizard", url, icon="wizard", min_role=Role.ADMINISTRATOR)]


class InternetMailWizard(RoleRequiredMixin, TemplateView):
    """One URL; the step shown is the session's, or ``?step=`` for one already reached."""

    read_role = Role.ADMINISTRATOR
    write_role = Role.ADMINISTRATOR
    template_name = "connectors/wizard.html"

    # --- session ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        stored = self.request.session.get(SESSION_KEY)
        return stored if isinstance(stored, dict) else {"step": "server", "answers": {}}

    def save_state(self, state: dict[str, Any]) -> None:
        self.request.session[SESSION_KEY] = state

    def url(self) -> str:
        return reverse("connectors:internet-mail-wizard")

    # --- GET -------------------------------------------------------------------------------
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if "restart" in request.GET:
            request.session.pop(SESSION_KEY, None)
            return redirect(self.url())
        done = request.session.pop(DONE_KEY, None)
        if done is not None:
            return self.render_done(done)
        state = self.state()
        states = walk(state["answers"])
        if request.GET.get("server", "").isdigit():
            # htmx asks for the virtual servers of the server just chosen.
            form = ServerStep(initial={"server": request.GET["server"]}, choices=Choices())
            states[0] = replace(states[0], form=form)
            return self.render_step(states, 0)
        wanted = request.GET.get("step") or state["step"]
        index = next((i for i, s in enumerate(states) if s.step.key == wanted), len(states) - 1)
        return self.render_step(states, index)

    def steps(self, states: list[StepState], current: str) -> tuple[list[dict[str, Any]], int]:
        """The steps that apply (links to those reached) and the current one's number."""
        latest = replace(states[-1].choices)
        if states[-1].done:
            states[-1].form.contribute(latest)
        keys = [s.key for s in STEPS if s.applies(latest)]
        reached = {s.step.key for s in states}
        steps = [
            {
                "title": step.form.title,
                "url": f"?step={step.key}" if step.key in reached else "",
                "current": step.key == current,
            }
            for step in STEPS
            if step.key in keys
        ]
        return steps, keys.index(current) + 1

    def render_step(
        self, states: list[StepState], index: int, status: int = 200, **extra: Any
    ) -> HttpResponse:
        current = states[index]
        steps, number = self.steps(states, current.step.key)
        context = self.get_context_data(
            title="Internet Mail Wizard",
            nav_key=NAV_KEY,
            steps=steps,
            number=number,
            step_key=current.step.key,
            form=current.form,
            plan=getattr(current.form, "plan", None),
            notes=notes(current.choices) if current.step.key != "server" else [],
            **extra,
        )
        return self.render_to_response(context, status=status)

    def render_refused(self, states: list[StepState]) -> HttpResponse:
        """A step is no longer valid at Finish: the summary page says which and why."""
        failing = states[-1]
        labels = {name: f.label or name for name, f in failing.form.fields.items()}
        problems = [
            f"{labels[name]}: {error}" if name in labels else error
            for name, errors in failing.form.errors.items()
            for error in errors
        ]
        steps, _number = self.steps(states, failing.step.key)
        for step in steps:
            step["current"] = step["title"] == SummaryStep.title
        context = self.get_context_data(
            title="Internet Mail Wizard",
            nav_key=NAV_KEY,
            steps=steps,
            number=len(steps),
            step_key="summary",
            step_title=SummaryStep.title,
            form=None,
            plan=None,
            notes=[],
            refused=problems,
            refused_step=failing.step.form.title,
            refused_url=f"?step={failing.step.key}",
        )
        return self.render_to_response(context, status=400)

    def render_done(self, done: dict[str, Any]) -> HttpResponse:
        context = self.get_context_data(title="Internet Mail Wizard", nav_key=NAV_KEY, **done)
        return self.response_class(
            request=self.request, template="connectors/wizard_done.html", context=context
        )

    # --- POST ------------------------------------------------------------------------------
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        action = request.POST.get("wizard_action", "next")
        if action == "cancel":
            request.session.pop(SESSION_KEY, None)
            messages.info(request, "The Internet Mail Wizard was cancelled; nothing was changed.")
            return redirect(reverse("smtpadmin:organization"))
        state = self.state()
        if action == "finish":
            return self.finish(state)
        states = walk(state["answers"])
        key = request.POST.get("step", "")
        index = next((i for i, s in enumerate(states) if s.step.key == key), None)
        if index is None:
            messages.warning(request, "Finish the earlier steps of the wizard first.")
            return redirect(self.url())
        current = states[index]
        form = current.step.form(request.POST, choices=current.choices)
        valid = form.is_valid()
        if valid and key != "summary":  # the summary is confirmed by Finish, never saved
            state["answers"][key] = {
                name: request.POST.getlist(name) for name in form.fields if name in request.POST
            }
        if action == "back":
            state["step"] = states[max(index - 1, 0)].step.key
        elif not valid:
            states[index] = replace(current, form=form)
            return self.render_step(states, index, status=400)
        else:
            following = walk(state["answers"])
            state["step"] = following[min(index + 1, len(following) - 1)].step.key
        self.save_state(state)
        return redirect(self.url())

    def finish(self, state: dict[str, Any]) -> HttpResponse:
        request = self.request
        posted = request.POST.get("plan_digest", "")
        try:
            with transaction.atomic():
                # Lock the virtual server first: its relay settings must not change between
                # this last check and the changes made from it.
                vs_pk = state["answers"].get("server", {}).get("virtual_server", [""])[-1]
                if str(vs_pk).isdigit():
                    list(VirtualServer.objects.select_for_update().filter(pk=vs_pk))
                states = walk(state["answers"])
                last = states[-1]
                if last.step.key != "summary":
                    if not last.form.is_bound:  # the answers are gone (a new session)
                        messages.warning(request, "The wizard's answers are gone; start again.")
                        return redirect(self.url())
                    return self.render_refused(states)
                assert isinstance(last.form, SummaryStep)
                if last.form.plan.digest != posted:
                    return self.render_step(states, len(states) - 1, status=409, changed=True)
                done = last.form.plan.apply(request.user)
        except (IntegrityError, ValidationError) as exc:
            # Something changed between the checks and the writes; the transaction is undone.
            states = walk(state["answers"])
            if states[-1].step.key != "summary":
                return self.render_refused(states)
            if isinstance(exc, ValidationError):
                why = "; ".join(exc.messages)
            else:
                logger.warning("Internet Mail Wizard: conflict at finish: %s", exc)
                why = "Another change to the same objects was saved meanwhile; check and retry."
            return self.render_step(states, len(states) - 1, status=409, failure=why)
        vs = last.form.plan.vs
        request.session.pop(SESSION_KEY, None)
        request.session[DONE_KEY] = {
            "done": done,
            "receives": last.choices.receives,
            "domains": last.choices.domains,
            "fqdn": "" if vs.effective_fqdn == "localhost" else vs.effective_fqdn,
            "vs_name": str(vs),
            "vs_url": reverse("servers:virtual-server", args=[vs.pk]),
        }
        return redirect(self.url())
