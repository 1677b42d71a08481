"""The servers app's nodes in the console tree: Recipients' containers, and under Servers each
server > Protocols > SMTP > each virtual server > Current Sessions, with status badges.
The servers and each SMTP container's virtual servers are bounded branches: a page costs a
few queries however many there are."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse

from servers.console.common import server_status, virtual_server_status
from servers.models import Server, VirtualServer
from smtpadmin.navigation import BRANCH_LIMIT, Node, bounded, few_by, navigation


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


def _protocols(server: Server) -> Node:
    smtp = Node(
        key=f"server-{server.pk}-smtp",
        label="SMTP",
        url=reverse("servers:smtp", args=[server.pk]),
        icon="protocol",
        branch=True,
    )
    return Node(
        key=f"server-{server.pk}-protocols",
        label="Protocols",
        url=reverse("servers:protocols", args=[server.pk]),
        children=[smtp],
    )


def _server(server: Server) -> Node:
    """A server, a branch: Protocols > SMTP load when it is opened (one line while closed)."""
    status, text = server_status(server)
    return Node(
        key=f"server-{server.pk}",
        label=server.name,
        url=reverse("servers:server", args=[server.pk]),
        icon="server",
        status=status,
        status_text=text,
        branch=True,
    )


def server_children(user: Any, match: re.Match[str], path: frozenset[str]) -> list[Node]:
    server = Server.objects.filter(pk=int(match.group(1))).first()
    return [_protocols(server)] if server else []


def _numbers(prefix: str, path: frozenset[str]) -> list[int]:
    """The ids of the path's keys ``prefix<id>`` (``server-7``, not ``server-7-smtp``)."""
    return [int(key.removeprefix(prefix)) for key in path if re.fullmatch(rf"{prefix}\d+", key)]


def servers(user: Any, match: re.Match[str], path: frozenset[str]) -> list[Node]:
    """The Servers section: the first servers by name, the current page's, and "More…"."""
    rows = Server.objects.order_by("name", "pk")
    return bounded(
        "servers",
        [_server(s) for s in rows[: BRANCH_LIMIT + 1]],
        path,
        lambda: [_server(s) for s in rows.filter(pk__in=_numbers("server-", path))],
        reverse("servers:server-list"),
    )


def virtual_servers(user: Any, match: re.Match[str], path: frozenset[str]) -> list[Node]:
    """A server's SMTP container, a branch: its virtual servers (each with Current Sessions)."""
    server = int(match.group(1))
    rows = VirtualServer.objects.filter(server_id=server).order_by("name", "pk")
    return bounded(
        match.group(0),
        [_virtual_server(vs) for vs in rows[: BRANCH_LIMIT + 1]],
        path,
        lambda: [_virtual_server(vs) for vs in rows.filter(pk__in=_numbers("vs-", path))],
        reverse("servers:smtp", args=[server]),
    )


def _virtual_server_parent(match: re.Match[str]) -> str:
    server = VirtualServer.objects.filter(pk=int(match.group(1))).values_list("server_id")
    return f"server-{server[0][0]}-smtp" if server else ""


def register() -> None:
    navigation.register("recipients", recipients, order=10)
    navigation.register_branch("servers", servers)
    navigation.register_branch(
        r"server-(\d+)",
        server_children,
        few=lambda: few_by(
            Server.objects.order_by("name", "pk"), lambda s: f"server-{s.pk}", _protocols
        ),
    )
    navigation.register_branch(
        r"server-(\d+)-smtp",
        virtual_servers,
        few=lambda: few_by(
            VirtualServer.objects.order_by("name", "pk"),
            lambda vs: f"server-{vs.server_id}-smtp",
            _virtual_server,
        ),
    )
    navigation.link_section("servers", lambda: reverse("servers:server-list"))
    # Server > Protocols > SMTP > virtual server > Current Sessions, upwards.
    navigation.register_parent(r"vs-(\d+)-sessions", lambda m: f"vs-{m.group(1)}")
    navigation.register_parent(r"vs-(\d+)", _virtual_server_parent)
    navigation.register_parent(r"server-(\d+)-smtp", lambda m: f"server-{m.group(1)}-protocols")
    navigation.register_parent(r"server-(\d+)-protocols", lambda m: f"server-{m.group(1)}")
    navigation.register_parent(r"server-(\d+)", lambda m: "servers")
