"""The organization of a ledger run, written through the ORM of a separate process into the
private database (``DATABASE_URL``): one server with one virtual server, a local mailbox, an
SMTP credential and a connector to the sink's smart host. Also Force Connection on every
queue (``--force``), as an administrator does once a full disk has space again.

    python -m tests.ledger.setup_world world <drop> <port> <smart host>
    python -m tests.ledger.setup_world force
"""

from __future__ import annotations

import json
import os
import sys

PASSWORD = "ledger-Passw0rd"
SERVER = "ledger1"
LOCAL = "alice@smtpadmin.test"
SENDER = "ledger@smtpadmin.test"


def world(drop: str, port: int, smart_host: str) -> dict[str, object]:
    from connectors.models import AddressSpace, Connector
    from servers.models import (
        AcceptedDomain,
        Mailbox,
        RoutingGroup,
        Server,
        SmtpCredential,
        VirtualServer,
    )

    server = Server.objects.create(
        name=SERVER,
        fqdn="ledger1.relay.test",
        routing_group=RoutingGroup.first(),
        drop_directory=drop,
    )
    vs = VirtualServer(
        server=server,
        name="Ledger",
        ip_address="127.0.0.1",
        port=port,
        fqdn="mx.relay.test",
        # Connections of 20 messages: a long run opens many (each message is recorded as
        # its reply arrives, so a worker killed mid-connection re-sends only the one in flight).
        messages_per_connection=20,
        retry_first_minutes=1,
        retry_second_minutes=1,
        retry_third_minutes=1,
        retry_subsequent_minutes=1,
    )
    vs.full_clean()
    vs.save()
    AcceptedDomain.objects.create(domain="smtpadmin.test", is_default=True)
    for address in (LOCAL, SENDER):
        box = Mailbox(address=address)
        box.full_clean()
        box.save()
    credential = SmtpCredential(username="ledger")
    credential.set_password(PASSWORD)
    credential.save()
    connector = Connector.objects.create(
        name="Sink", routing_group=RoutingGroup.first(), use_dns=False, smart_hosts=smart_host
    )
    connector.bridgeheads.set([vs])
    AddressSpace.objects.create(connector=connector, domain="*", cost=1)
    return {"server": SERVER, "port": port, "password": PASSWORD}


def force() -> dict[str, object]:
    from relay.admin.actions import retry_queue_now
    from relay.queue.models import LinkQueue

    return {"queues": [retry_queue_now(queue, by=None) for queue in LinkQueue.objects.all()]}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtpadmin.settings")
    import django

    django.setup()
    command, *arguments = sys.argv[1:]
    if command == "world":
        result = world(arguments[0], int(arguments[1]), arguments[2])
    elif command == "force":
        result = force()
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
