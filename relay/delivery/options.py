"""What one connection of a link queue needs: where to go (``HopPlan``) and how to talk
(``OutboundOptions``), from the queue, its connector and the virtual server whose delivery
settings apply (the queue entry's: the connector's bridgehead, else the receiving one)."""

from __future__ import annotations

from django.conf import settings

from connectors.models import Connector
from relay.delivery.client import OutboundOptions
from relay.delivery.nexthop import HopPlan, plan_mx, plan_smart_hosts
from relay.dns import DnsServerError, make_sync_resolver
from relay.queue.models import LinkQueue
from servers.models import VirtualServer
from servers.models.virtual_server import OutboundAuth

DEFAULT_PORT = 25
DEFAULT_TIMEOUT_SECONDS = 600.0


def hop_plan(queue: LinkQueue, vs: VirtualServer | None) -> HopPlan:
    """The hops for one connection of ``queue``: smart hosts in order, else the MX of the
    queue's domain, looked up through the virtual server's external DNS servers (else the
    installation's, else the system's), on the virtual server's outbound TCP port."""
    port = vs.remote_port if vs is not None else DEFAULT_PORT
    try:
        resolver = make_sync_resolver((vs.external_dns_servers or ()) if vs is not None else ())
    except DnsServerError as exc:
        return HopPlan((), temporary_error=f"4.4.3 Unusable DNS server setting: {exc}")
    if queue.smart_hosts.strip():
        # A connector's edited smart hosts make a new queue: its mail is routed there.
        return plan_smart_hosts(queue.smart_hosts, port, resolver)
    if queue.domain:
        return plan_mx(queue.domain, port, resolver)
    return HopPlan((), temporary_error=f"4.4.4 The queue '{queue.name}' has no next hop")


def outbound_options(connector: Connector | None, vs: VirtualServer | None) -> OutboundOptions:
    """How to talk to the next hop: the connector's outbound security (Advanced tab) when the
    queue belongs to one, else the virtual server's (Delivery tab); the virtual server's FQDN
    in EHLO, its masquerade domain and its outbound time-out either way. The CA bundle for
    certificate checks is ``SMTPADMIN_OUTBOUND_CA_FILE`` when set, else the system's."""
    if connector is not None:
        use_helo = connector.send_helo
        tls = connector.tls_mode
        tls_verify = connector.tls_verify
        basic = connector.outbound_auth == OutboundAuth.BASIC
        username, password = connector.outbound_username, connector.outbound_password
    elif vs is not None:
        use_helo = False
        tls = vs.outbound_tls
        tls_verify = vs.outbound_tls_verify
        basic = vs.outbound_auth == OutboundAuth.BASIC
        username, password = vs.outbound_username, vs.outbound_password
    else:
        use_helo, tls, tls_verify, basic, username, password = False, "none", True, False, "", ""
    return OutboundOptions(
        helo_name=vs.effective_fqdn if vs is not None else "localhost",
        use_helo=use_helo,
        tls=tls,
        tls_verify=tls_verify,
        ca_file=getattr(settings, "SMTPADMIN_OUTBOUND_CA_FILE", None) or None,
        username=username if basic else "",
        password=password if basic else "",
        timeout=(
            float(vs.outbound_timeout_minutes * 60) if vs is not None else DEFAULT_TIMEOUT_SECONDS
        ),
        mail_from_domain_masquerade=vs.masquerade_domain if vs is not None else "",
    )
