"""The organization of a bench run, written through the ORM of a separate process into the
database of ``DATABASE_URL``: one server, one virtual server on a loopback port with 127.0.0.1
on its relay list and no per-client connection limit (the load comes from one address), an
SMTP credential for the authenticated scenario, and one smart-host connector ``*`` to the sink.

    python -m bench.relay_world SERVER PORT SINK_PORT USERNAME PASSWORD

Prints one JSON line with what it created."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

DOMAIN = "relay.bench.test"


def build(
    server_name: str, port: int, sink_port: int, username: str, password: str
) -> dict[str, Any]:
    from connectors.models import AddressSpace, Connector
    from servers.models import (
        AcceptedDomain,
        Mailbox,
        RoutingGroup,
        Server,
        SmtpCredential,
        VirtualServer,
    )

    group = RoutingGroup.first()
    server = Server(name=server_name, fqdn=f"{server_name}.bench.test", routing_group=group)
    server.full_clean()
    server.save()
    vs = VirtualServer(
        server=server,
        name="Bench",
        ip_address="127.0.0.1",
        port=port,
        fqdn=f"mx.{DOMAIN}",
        relay_list=["127.0.0.1"],
        connection_limit=None,
        connection_limit_per_client=0,
    )
    vs.full_clean()
    vs.save()
    AcceptedDomain.objects.create(domain=DOMAIN, is_default=True)
    box = Mailbox(address=f"postmaster@{DOMAIN}")
    box.full_clean()
    box.save()
    credential = SmtpCredential(username=username)
    credential.set_password(password)
    credential.save()
    connector = Connector(
        name="Sink", routing_group=group, use_dns=False, smart_hosts=f"[127.0.0.1]:{sink_port}"
    )
    connector.full_clean()
    connector.save()
    connector.bridgeheads.set([vs])
    AddressSpace.objects.create(connector=connector, domain="*", cost=1)
    return {"server": server_name, "port": port, "virtual_server": vs.pk, "connector": connector.pk}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtpadmin.settings")
    import django

    django.setup()
    server, port, sink_port, username, password = sys.argv[1:6]
    print(json.dumps(build(server, int(port), int(sink_port), username, password)))


if __name__ == "__main__":
    main()
