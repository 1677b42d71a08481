"""The plan: every change Finish will make, described for the summary and then made."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from django.urls import reverse

from connectors.console.wizard.choices import Choices
from connectors.console.wizard.relay import relay_changes, relay_verdict, relaying_connectors
from connectors.models import Connector
from servers.models import AcceptedDomain, Server, VirtualServer
from servers.models.virtual_server import ListMode
from smtpadmin import audit

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
