"""A small organization with a row of every exported model, and helpers the configuration
export / import tests share."""

from __future__ import annotations

import io
import json
from typing import Any

from django.core.management import call_command

from connectors.models import AddressSpace, Connector
from relay.queue.rules import ReplyRule
from servers.models import (
    AcceptedDomain,
    Certificate,
    Mailbox,
    RoutingGroup,
    Server,
    SmtpCredential,
    VirtualServer,
)
from smtpadmin.models import Organization

PASSPHRASE = "correct horse battery staple"


def make_world() -> dict[str, Any]:
    """Two routing groups, two servers with a virtual server each (one with a certificate
    and an outbound password), domains, a mailbox, a credential, two connectors."""
    organization = Organization.get()
    organization.name = "Contoso"
    organization.blocked_senders = ["spam@bad.example"]
    organization.save()
    first, second = RoutingGroup.first(), RoutingGroup.objects.create(name="Branch Offices")
    mercury = Server.objects.create(name="mercury", fqdn="mercury.example.com", routing_group=first)
    venus = Server.objects.create(name="venus", fqdn="venus.example.com", routing_group=second)
    certificate = Certificate.generate_self_signed(name="mail", common_name="mail.example.com")
    certificate.save()
    front = VirtualServer.objects.create(
        server=mercury,
        name="Front",
        ip_address="127.0.0.1",
        port=2525,
        certificate=certificate,
        outbound_auth="basic",
        outbound_username="relay",
        outbound_password="outbound secret",
    )
    back = VirtualServer.objects.create(server=venus, name="Back", port=2526)
    AcceptedDomain.objects.create(domain="example.com", is_default=True)
    AcceptedDomain.objects.create(domain="*.corp.example.com")
    AcceptedDomain.objects.create(domain="partner.example", type="internal_relay")
    mailbox = Mailbox(address="alice@example.com", display_name="Alice")
    mailbox.clean()
    mailbox.save()
    credential = SmtpCredential(username="scanner")
    credential.set_password("scanner secret 1")
    credential.save()
    credential.virtual_servers.set([front])
    internet = Connector.objects.create(name="Internet", routing_group=first)
    internet.bridgeheads.set([front, back])
    AddressSpace.objects.create(connector=internet, domain="*", cost=5)
    partner = Connector.objects.create(
        name="Partner",
        routing_group=second,
        use_dns=False,
        smart_hosts="[127.0.0.5]",
        outbound_auth="basic",
        outbound_username="partner",
        outbound_password="partner secret",
    )
    partner.bridgeheads.set([back])
    AddressSpace.objects.create(connector=partner, domain="partner.example", cost=1)
    AddressSpace.objects.create(connector=partner, domain="*.partner.example", cost=2)
    ReplyRule.objects.create(order=50, code="550", pattern="no such user", action="fail")
    return {"front": front, "back": back, "internet": internet, "partner": partner}


def wipe() -> None:
    """Delete every exported object (the organization goes back to its defaults)."""
    for model in (
        ReplyRule,
        Connector,
        SmtpCredential,
        Mailbox,
        AcceptedDomain,
        VirtualServer,
        Certificate,
        Server,
        RoutingGroup,
    ):
        model.objects.all().delete()
    Organization.objects.all().delete()
    Organization.get()


def export(*args: str, **env: Any) -> str:
    out = io.StringIO()
    call_command("exportconfig", *args, stdout=out)
    return out.getvalue()


def document(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(export(*args))
    return result


def run_import(path: str, *args: str) -> tuple[str, str]:
    """Run importconfig; returns (stdout, stderr). Raises CommandError as the command does."""
    out, err = io.StringIO(), io.StringIO()
    call_command("importconfig", path, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Any, data: dict[str, Any] | str, name: str = "org.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return str(path)


def rows(data: dict[str, Any], section: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = data["sections"][section]
    return result


def row(data: dict[str, Any], section: str, field: str, value: Any) -> dict[str, Any]:
    return next(r for r in rows(data, section) if r[field] == value)
