from servers.models.recipients import AcceptedDomain, Mailbox
from servers.models.security import Certificate, SmtpCredential
from servers.models.topology import RoutingGroup, Server
from servers.models.virtual_server import VirtualServer

__all__ = [
    "AcceptedDomain",
    "Certificate",
    "Mailbox",
    "RoutingGroup",
    "Server",
    "SmtpCredential",
    "VirtualServer",
]
