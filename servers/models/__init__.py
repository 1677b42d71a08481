from servers.models.recipients import AcceptedDomain, Mailbox
from servers.models.security import Certificate, SmtpCredential
from servers.models.sessions import SessionFacts, SmtpSession, sync_live_sessions
from servers.models.topology import RoutingGroup, Server
from servers.models.virtual_server import VirtualServer

__all__ = [
    "AcceptedDomain",
    "Certificate",
    "Mailbox",
    "RoutingGroup",
    "Server",
    "SessionFacts",
    "SmtpCredential",
    "SmtpSession",
    "VirtualServer",
    "sync_live_sessions",
]
