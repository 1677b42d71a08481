"""The servers app's pickers: servers and virtual servers, searched by name once there are
many (bridgeheads, the simulator's listener, the wizard, a credential's virtual servers)."""

from __future__ import annotations

from servers.models import Server, VirtualServer
from smtpadmin.pickers import Picker, register


def register_pickers() -> None:
    register(
        Picker(
            "virtual-servers",
            lambda: VirtualServer.objects.select_related("server").order_by(
                "server__name", "name", "pk"
            ),
            lambda vs: f"{vs.name} ({vs.server.name})",
            ("name", "server__name"),
        )
    )
    register(
        Picker(
            "servers",
            lambda: Server.objects.order_by("name", "pk"),
            lambda server: server.name,
            ("name", "fqdn"),
        )
    )
