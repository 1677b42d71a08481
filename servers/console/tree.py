"""The servers app's nodes in the console tree: Recipients' containers, and under Servers each
server > Protocols > SMTP > each virtual server > Current Sessions, with status badges.
Two queries however many servers there are."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from servers.console.common import server_status, virtual_server_status
from servers.models import Server, VirtualServer
from smtpadmin.navigation import Node, navigation


def recipients(user: Any) -> list[Node]:
    return [
        Node(
            "accepted-domains",
            "Accepted Domains",
            reverse("servers:accepted-domain-list"),
            "domains",
        ),
        Node("mailboxes", "Mailboxes", reverse("servers:mailbox-list"), "mailboxes"),
        Node(
            "smtp-credentials",
            "SMTP Credentials",
            reverse("servers:smtp-credential-list"),
            "credentials",
        ),
        Node("certificates", "Certificates", reverse("servers:certificate-list"), "certificates"),
    ]


def _virtual_server(vs: VirtualServer) -> Node:
    status, text = virtual_server_status(vs)
    return Node(
        key=f"vs-{vs.pk}",
        label=vs.name,
        url=reverse("servers:virtual-server", args=[vs.pk]),
        icon="virtual-server",
        status=status,
        status_text=text,
        children=[
            Node(
                key=f"vs-{vs.pk}-sessions",
                label="Current Sessions",
                url=reverse("servers:sessions", args=[vs.pk]),
                icon="sessions",
            )
        ],
    )


def _server(server: Server) -> Node:
    status, text = server_status(server)
    smtp = Node(
        key=f"server-{server.pk}-smtp",
        label="SMTP",
        url=reverse("servers:smtp", args=[server.pk]),
        icon="protocol",
        children=[_virtual_server(vs) for vs in server.virtual_servers.all()],
    )
    protocols = Node(
        key=f"server-{server.pk}-protocols",
        label="Protocols",
        url=reverse("servers:protocols", args=[server.pk]),
        children=[smtp],
    )
    return Node(
        key=f"server-{server.pk}",
        label=server.name,
        url=reverse("servers:server", args=[server.pk]),
        icon="server",
        status=status,
        status_text=text,
        children=[protocols],
    )


def servers(user: Any) -> list[Node]:
    return [_server(s) for s in Server.objects.prefetch_related("virtual_servers")]


def register() -> None:
    navigation.register("recipients", recipients, order=10)
    navigation.register("servers", servers, order=10)
    navigation.link_section("servers", lambda: reverse("servers:server-list"))
