"""Seed a new organization once: this host as a server, its default SMTP virtual server, an
accepted domain and an "Internet" connector, so that a fresh install has something to show.

The Organization row is the marker: when it exists the organization has been set up (by this
command or by hand) and nothing is touched, so ``make run`` can call this on every start.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, models, transaction

from connectors.models import AddressSpace, Connector
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer
from smtpadmin.audit import record_create
from smtpadmin.host import host_fqdn
from smtpadmin.models import Organization

DEFAULT_DOMAIN = "smtpadmin.test"  # .test is reserved (RFC 2606): never someone else's domain
DEFAULT_VIRTUAL_SERVER = "Default SMTP Virtual Server"


class Command(BaseCommand):
    help = (
        "Seed the organization once: this host as a server, the 'Default SMTP Virtual Server' "
        "(127.0.0.1:2525, Exchange 2003 profile), an authoritative default accepted domain and "
        "an 'Internet' connector (* by DNS). Does nothing when the organization exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--domain",
            default=DEFAULT_DOMAIN,
            help=f"The default accepted domain (authoritative). Default: {DEFAULT_DOMAIN}.",
        )
        parser.add_argument(
            "--server",
            default=None,
            help="The server's name. Default: SMTPADMIN_SERVER_NAME (this host's short name).",
        )
        parser.add_argument(
            "--ip",
            default="127.0.0.1",
            help="The virtual server's IP address, or 'all' for (All Unassigned). "
            "Default: 127.0.0.1.",
        )
        parser.add_argument("--port", type=int, default=2525, help="Default: 2525.")

    def handle(self, *args: Any, **options: Any) -> None:
        if Organization.objects.exists():
            self.stdout.write("The organization is already set up; nothing seeded.")
            return
        ip = None if options["ip"].lower() in ("all", "") else options["ip"]
        server_name = options["server"] or settings.SMTPADMIN_SERVER_NAME
        try:
            with transaction.atomic():
                created = self._seed(server_name, ip, options["port"], options["domain"])
        except ValidationError as exc:
            raise CommandError(f"Cannot seed the organization: {_describe(exc)}") from None
        except IntegrityError:
            # Another process seeded at the same moment; its transaction won.
            raise CommandError("The organization was seeded concurrently; run again.") from None
        for line in created:
            self.stdout.write(f"  {line}")
        self.stdout.write(self.style.SUCCESS("Seeded the organization."))

    def _seed(self, server_name: str, ip: str | None, port: int, domain: str) -> list[str]:
        created: list[str] = []
        organization = Organization()
        _save(organization)
        created.append(f"organization '{organization}'")
        group = RoutingGroup.first()

        # The relay worker may have registered this host already (runrelay creates its row).
        server = Server.objects.filter(name=server_name).first()
        if server is None:
            server = Server(name=server_name, fqdn=host_fqdn(), routing_group=group)
            _save(server)
        created.append(f"server '{server.name}' ({server.fqdn or 'no FQDN'})")

        virtual_server = VirtualServer.with_profile(
            "exchange2003", server=server, name=DEFAULT_VIRTUAL_SERVER, ip_address=ip, port=port
        )
        _save(virtual_server)
        created.append(f"virtual server '{virtual_server.name}' on {virtual_server.binding}")

        accepted = AcceptedDomain(
            domain=domain, type=AcceptedDomain.Type.AUTHORITATIVE, is_default=True
        )
        _save(accepted)
        created.append(f"accepted domain '{accepted.domain}' (authoritative, default)")

        # Every domain that receives mail needs its postmaster (RFC 5321 4.5.1).
        postmaster = Mailbox(address=f"postmaster@{accepted.domain}", display_name="Postmaster")
        _save(postmaster)
        created.append(f"mailbox '{postmaster.address}'")

        connector = Connector(name="Internet", routing_group=group, use_dns=True)
        _save(connector, audit=False)
        connector.bridgeheads.set([virtual_server])
        _save(AddressSpace(connector=connector, domain="*", cost=1), audit=False)
        record_create(None, connector)  # now with its bridgehead and address space
        created.append("connector 'Internet': SMTP:*;1 by DNS")
        return created


def _save(instance: models.Model, audit: bool = True) -> None:
    instance.full_clean()
    instance.save()
    if audit:
        record_create(None, instance)  # the audit log shows these as made by "system"


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)
