"""A small organization for the console tests: one server with one virtual server, a domain
with a mailbox, a credential and a certificate; and helpers to log in and fill sheets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import models
from django.test import Client

from servers.models import (
    AcceptedDomain,
    Certificate,
    Mailbox,
    RoutingGroup,
    Server,
    SmtpCredential,
    VirtualServer,
)

CREDENTIAL_PASSWORD = "app-password-1"
OUTBOUND_PASSWORD = "outbound-Secret-42"


@dataclass
class World:
    server: Server
    virtual_server: VirtualServer
    domain: AcceptedDomain
    mailbox: Mailbox
    credential: SmtpCredential
    certificate: Certificate


def build_world() -> World:
    server = Server.objects.create(
        name="mx1", fqdn="mx1.example.com", routing_group=RoutingGroup.first()
    )
    virtual_server = VirtualServer.objects.create(
        server=server, port=2525, outbound_password=OUTBOUND_PASSWORD
    )
    domain = AcceptedDomain.objects.create(domain="example.com", is_default=True)
    mailbox = Mailbox.objects.create(address="alice@example.com", domain=domain)
    credential = SmtpCredential(username="app")
    credential.set_password(CREDENTIAL_PASSWORD)
    credential.save()
    certificate = Certificate.generate_self_signed("mail", "mail.example.com")
    certificate.save()
    return World(server, virtual_server, domain, mailbox, credential, certificate)


def logged_in(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def form_data(instance: models.Model, fields: list[str], **changes: Any) -> dict[str, Any]:
    """What a browser posts for ``fields`` of ``instance`` unchanged, then ``changes``."""
    data: dict[str, Any] = {}
    for name in fields:
        field = instance._meta.get_field(name)
        if field.many_to_many:
            data[name] = [str(o.pk) for o in getattr(instance, name).all()]
            continue
        value = getattr(instance, getattr(field, "attname", name))
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list):
            data[name] = "\n".join(value)
        elif value is not None:
            data[name] = str(value)
        else:
            data[name] = ""
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


def html_of(response: Any) -> str:
    return str(response.content.decode())
