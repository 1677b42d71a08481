"""What the wizard's steps choose from, and what they chose so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.models import Connector
from servers.models import AcceptedDomain, VirtualServer

DEFAULT_CONNECTOR_NAME = "Internet Mail Connector"
FUNCTIONS = [
    ("both", "Send and receive Internet mail"),
    ("send", "Send Internet mail only (an outbound connector)"),
    ("receive", "Receive Internet mail only (accepted domains)"),
]


@dataclass
class Choices:
    """What the steps chose so far; each valid step adds its answers."""

    virtual_server: VirtualServer | None = None
    function: str = ""
    domains: list[str] = field(default_factory=list)
    domain_type: str = AcceptedDomain.Type.AUTHORITATIVE
    default_domain: str = ""  # "" = leave the default domain as it is
    connector: Connector | None = None  # validated, not saved
    address_spaces: list[dict[str, Any]] = field(default_factory=list)
    tighten: bool = False

    @property
    def receives(self) -> bool:
        return self.function in ("receive", "both")

    @property
    def sends(self) -> bool:
        return self.function in ("send", "both")
