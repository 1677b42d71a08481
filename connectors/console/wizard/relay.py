"""Relay checks shared by the Relay check step and the plan: who may relay, and what closing
relay changes."""

from __future__ import annotations

from connectors.models import Connector
from servers.models import VirtualServer
from servers.models.virtual_server import ListMode


def relaying_connectors() -> list[Connector]:
    """Connectors that let anyone relay to every domain (address space '*')."""
    return list(Connector.objects.filter(allow_relay=True, address_spaces__domain="*").distinct())


def relay_problems(vs: VirtualServer, connectors: list[Connector]) -> list[str]:
    """Why relay is open, for the virtual server and the organization's connectors."""
    return vs.open_relay_reasons() + [
        f"connector '{c.name}' allows messages to be relayed to every domain (address space *)"
        for c in connectors
    ]


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
