"""Session policy: what a virtual server lets a client do, decided on plain data.

Every function takes the listener's snapshot (``relay.smtp.config``) and facts about the
session, and returns ``None`` (go ahead) or the ``Reply`` to send, with an RFC 3463 enhanced
status code and words an administrator reading a log or a bounce understands. No database,
no DNS, no sockets: the protocol layer looks things up and asks here.

Relay is closed unless the configuration opens it: a recipient is accepted only for a mailbox
of an authoritative accepted domain (any address there when the organization does not filter
recipients who are not in the directory), for a relay-type accepted domain, for the address
space of a connector that allows relay and has this virtual server as a bridgehead, or when
this client may relay (relay list, or authenticated with "allow all computers which
successfully authenticate to relay" on). Addresses reach here only through
``addresses.parse_path``, which has already refused source routes, '@' in local parts,
recipient address literals and anything aiosmtpd reads differently.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import replace

from django.core.exceptions import ValidationError

from connectors.routing import normal_sender_restriction
from connectors.snapshot import AcceptedDomainFacts, Topology, pattern_keys
from relay.smtp.addresses import ParsedAddress, Reply, echo
from relay.smtp.config import Directory, ListenerConfig, OrganizationPolicy
from smtpadmin.validators import (
    host_list_matches,
    normalize_address,
    parse_host_entry,
    pattern_matches,
    pattern_specificity,
    sender_pattern_matches,
)

__all__ = [
    "PAUSED",
    "DataOutcome",
    "ParsedAddress",
    "Reply",
    "accepted_domain",
    "auth_decision",
    "auth_mechanisms",
    "backup_relay",
    "connection_decision",
    "connection_limit_reply",
    "connector_refusal",
    "data_ends_session",
    "data_line_outcome",
    "data_reply",
    "data_size_outcome",
    "declared_size_refusal",
    "declared_size_reply",
    "greeting_name_refusal",
    "hop_count",
    "hop_count_reply",
    "largest_message",
    "line_outcome",
    "may_relay",
    "message_config",
    "message_count_reply",
    "message_size_limit",
    "needs_reverse_dns",
    "normal_client_ip",
    "organization_sizes_apply",
    "recipient_count_reply",
    "recipient_decision",
    "recipient_size_limit",
    "recipient_size_reply",
    "recipients_limit",
    "send_limit_reply",
    "sender_decision",
    "session_size_reply",
    "size_refusal",
    "unknown_recipient_reply",
]

ONLY_LISTED = "only_listed"
ALL_EXCEPT_LISTED = "all_except_listed"
# Sender-specified routing: "user%other@relay", "other!user@relay" (RFC 5321 3.6.1, 2.3.5).
ROUTING_CHARACTERS = ("%", "!", "@")

PAUSED = Reply(421, "4.3.2 This virtual server is paused; try again later")


# --- the client ---------------------------------------------------------------------------


def normal_client_ip(ip: str) -> str:
    """The client's address as lists compare it: an IPv4 client of a dual-stack listener
    (``::ffff:192.0.2.1``) is ``192.0.2.1``, and an IPv6 zone (``%eth0``) is dropped, so a
    deny list of IPv4 entries cannot be stepped around by the way the socket reports it."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def _who(ip: str, name: str | None) -> str:
    return f"{ip} ({echo(name)})" if name else ip


def _listed(entries: Iterable[str], ip: str, name: str | None) -> bool:
    # An unknown reverse DNS name (None or "") matches no domain entry.
    return host_list_matches([_ipv4_form(e) for e in entries], normal_client_ip(ip), name or None)


def _ipv4_form(entry: str) -> str:
    """An entry written as IPv4-mapped IPv6 (``::ffff:192.0.2.1``, ``::ffff:0:0/96``) in its
    IPv4 form: the client is compared as IPv4, and "all except ::ffff:192.0.2.1" must still
    exclude 192.0.2.1. Other entries unchanged."""
    try:
        network = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return entry  # a domain (or garbage, which the list's own parser reports)
    mapped = network.network_address
    if (
        isinstance(mapped, ipaddress.IPv6Address)
        and mapped.ipv4_mapped is not None
        and network.prefixlen >= 96
    ):
        return f"{mapped.ipv4_mapped}/{network.prefixlen - 96}"
    return entry


def needs_reverse_dns(config: ListenerConfig, org: OrganizationPolicy) -> bool:
    """Whether a session must look up the client's (forward-confirmed) reverse DNS name:
    the Received header wants it, or a connection or relay list has domain entries. The
    organization's global accept / deny lists hold addresses only."""
    if config.reverse_dns_lookup:
        return True
    return any(_is_domain_entry(e) for e in (*config.connection_list, *config.relay_list))


def _is_domain_entry(entry: str) -> bool:
    try:
        return parse_host_entry(entry)[0] == "domain"
    except ValidationError:
        return False


MAX_GREETING_NAME = 255  # octets: a domain name (RFC 1035 2.3.4); the HELO column's size


def greeting_name_refusal(name: str) -> Reply | None:
    """The EHLO / HELO argument as aiosmtpd decoded it (invalid UTF-8 as lone surrogates).
    Kept only as printable UTF-8 text a database column and a log line take; no stricter
    than that, since many real clients greet with names that are not domain names."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return Reply(501, "5.5.2 Syntax: EHLO hostname (the name is not valid UTF-8)")
    if not name.isprintable():
        return Reply(501, "5.5.2 Syntax: EHLO hostname (the name contains control characters)")
    if len(name.encode("utf-8")) > MAX_GREETING_NAME:
        return Reply(
            501, f"5.5.2 Syntax: EHLO hostname (the name is longer than {MAX_GREETING_NAME} octets)"
        )
    return None


# --- connecting ---------------------------------------------------------------------------


def connection_decision(
    client_ip: str,
    client_name: str | None,
    config: ListenerConfig,
    org: OrganizationPolicy,
    *,
    dnsbl_listing: str | None = None,
) -> Reply | None:
    """May this client connect? ``None`` = send the banner.

    With "apply connection filter" on: the organization's global accept list lets a client
    past the global deny list and the block lists (not past the virtual server's own
    connection control); the deny list and a DNSBL listing (``dnsbl_listing``, e.g. "listed
    by zen.example.org") refuse it. Then the virtual server's connection control: "only the
    list below" or "all except the list below", by IP, subnet or reverse DNS domain.
    """
    ip = normal_client_ip(client_ip)
    who = _who(ip, client_name)
    if config.apply_connection_filter and not _listed(org.global_accept_list, ip, None):
        if _listed(org.global_deny_list, ip, None):
            return Reply(554, f"5.7.1 Access denied: {ip} is on this organization's deny list")
        if dnsbl_listing:
            return Reply(554, f"5.7.1 Access denied: {ip} is {echo(dnsbl_listing)}")
    listed = _listed(config.connection_list, ip, client_name)
    if config.connection_mode == ONLY_LISTED and not listed:
        return Reply(
            554,
            f"5.7.1 Access denied: {who} is not among the computers allowed to connect "
            "to this virtual server",
        )
    if config.connection_mode != ONLY_LISTED and listed:
        return Reply(
            554,
            f"5.7.1 Access denied: {who} is among the computers refused by this virtual server",
        )
    return None


def connection_limit_reply(
    open_connections: int,
    config: ListenerConfig,
    *,
    client_ip: str = "",
    from_client: int = 0,
) -> Reply | None:
    """``open_connections``: the sessions admitted and still open, not counting this one;
    ``from_client``: those of them from ``client_ip``. Sessions being refused do not count."""
    limit = config.connection_limit
    if limit is not None and open_connections >= limit:
        return Reply(
            421, f"4.4.5 Too many connections to this virtual server (limit {limit}); try later"
        )
    per_client = config.connection_limit_per_client
    if per_client and from_client >= per_client:
        return Reply(
            421,
            f"4.7.0 Too many connections from {echo(client_ip)} (limit {per_client} per client "
            "address); close some or try later",
        )
    return None


# --- authentication and TLS ---------------------------------------------------------------


def auth_mechanisms(config: ListenerConfig, *, tls: bool) -> tuple[str, ...]:
    """The AUTH mechanisms to advertise in the EHLO answer (none: do not advertise AUTH).
    Where TLS is required for authentication or for everything, AUTH is advertised only
    after STARTTLS, so a client never sends its password in the clear to find out."""
    if not config.auth_basic:
        return ()
    if (config.auth_basic_requires_tls or config.require_tls) and not tls:
        return ()
    return ("PLAIN", "LOGIN")


AUTH_IN_TRANSACTION = Reply(
    503, "5.5.1 AUTH is not permitted during a mail transaction; RSET first (RFC 4954 4)"
)


def auth_decision(
    config: ListenerConfig, *, tls: bool, in_transaction: bool = False
) -> Reply | None:
    """May the client start AUTH now? ``in_transaction``: MAIL FROM was accepted."""
    if in_transaction:
        return AUTH_IN_TRANSACTION
    if not config.auth_basic:
        return Reply(502, "5.5.1 Authentication is not enabled on this virtual server")
    if config.auth_basic_requires_tls and not tls:
        return Reply(538, "5.7.11 Encryption required for authentication: issue STARTTLS first")
    return None


# --- MAIL FROM ----------------------------------------------------------------------------


def tls_refusal(config: ListenerConfig, *, tls: bool) -> Reply | None:
    """ "Require TLS": nothing but EHLO, STARTTLS, NOOP and QUIT before STARTTLS."""
    if config.require_tls and not tls:
        return Reply(530, "5.7.0 Must issue a STARTTLS command first")
    return None


def transaction_refusal(config: ListenerConfig, *, authenticated: bool, tls: bool) -> Reply | None:
    """May this session start a transaction at all (whoever the sender)?"""
    refusal = tls_refusal(config, tls=tls)
    if refusal is None and not config.auth_anonymous and not authenticated:
        refusal = Reply(
            530, "5.7.0 Authentication required: this virtual server does not take anonymous mail"
        )
    return refusal


def sender_decision(
    sender: ParsedAddress,
    *,
    config: ListenerConfig,
    org: OrganizationPolicy,
    authenticated: bool,
    tls: bool,
) -> Reply | None:
    """May a transaction start with this sender? TLS and authentication requirements first,
    then the organization's sender filter when this virtual server applies it."""
    refusal = transaction_refusal(config, authenticated=authenticated, tls=tls)
    if refusal is not None:
        return refusal
    if config.apply_sender_filter:
        if sender.is_null:
            if org.filter_blank_senders:
                return Reply(
                    550,
                    "5.7.1 Mail from the null sender <> is refused by this organization's "
                    "sender filter",
                )
        elif any(sender_pattern_matches(p, sender.address) for p in org.blocked_senders):
            return Reply(
                550,
                f"5.7.1 Sender <{sender.address}> is refused by this organization's sender filter",
            )
    return None


# --- RCPT TO ------------------------------------------------------------------------------


def may_relay(
    client_ip: str, client_name: str | None, authenticated: bool, config: ListenerConfig
) -> bool:
    """May this client send to domains this organization does not accept mail for?

    Authenticated clients may when "allow all computers which successfully authenticate to
    relay" is on. Otherwise the relay list decides: "only the list below" (an empty list lets
    no one relay) or "all except the list below". A domain entry matches only a known,
    forward-confirmed reverse DNS name (``None`` or ``""`` = unknown: matches nothing).
    """
    if authenticated and config.relay_allow_authenticated:
        return True
    listed = _listed(config.relay_list, client_ip, client_name)
    if config.relay_mode == ALL_EXCEPT_LISTED:
        return not listed
    return listed  # "only the list below", and anything unexpected: closed


def accepted_domain(domain: str, directory: Directory) -> AcceptedDomainFacts | None:
    """The most specific accepted domain covering ``domain``. ``*.example.com`` covers the
    sub-domains of example.com, not example.com itself. A bare ``*`` is ignored: the model
    refuses it (it would accept every domain), and this is the last line of defence."""
    if domain.startswith("["):
        return None
    matches = [
        d
        for d in directory.accepted_domains
        if d.pattern != "*" and pattern_matches(d.pattern, domain)
    ]
    return max(matches, key=lambda d: pattern_specificity(d.pattern), default=None)


def recipient_decision(
    rcpt: ParsedAddress,
    *,
    client_ip: str,
    client_name: str | None,
    authenticated: bool,
    config: ListenerConfig,
    org: OrganizationPolicy,
    directory: Directory,
) -> Reply | None:
    """Accept this recipient (``None``) or say why not.

    A mailbox of an authoritative domain is accepted, any other address there as
    ``unknown_recipient_reply`` says. A relay-type accepted domain (internal or external
    relay), and the address space of a connector that allows relay through this virtual
    server (``backup_relay``), is accepted, except local parts with '%', '!' or '@'
    (sender-specified routing the next hop might obey) from a client that may not relay.
    Every other domain is relay: only for clients ``may_relay`` allows, 550 5.7.1 otherwise.
    """
    if rcpt.is_null:
        return Reply(501, "5.1.3 The null address <> cannot be a recipient")
    if config.apply_recipient_filter and any(
        sender_pattern_matches(p, rcpt.address) for p in org.blocked_recipients
    ):
        return Reply(
            550,
            f"5.7.1 Recipient <{rcpt.address}> is refused by this organization's recipient filter",
        )
    accepted = accepted_domain(rcpt.domain, directory)
    if accepted is not None and accepted.type == "authoritative":
        if rcpt.address.lower() in directory.mailboxes:
            return None
        return unknown_recipient_reply(rcpt, org)
    relay = may_relay(client_ip, client_name, authenticated, config)
    if accepted is not None or backup_relay(rcpt.domain, config):
        if not relay and any(c in rcpt.local for c in ROUTING_CHARACTERS):
            return Reply(
                550,
                f"5.7.1 Relaying denied: <{rcpt.address}> names another destination inside "
                "the local part ('%', '!' or '@'); that routing is not accepted from this client",
            )
    elif not relay:
        return Reply(550, f"5.7.1 Relaying denied: {_relay_hint(rcpt.domain, config)}")
    return _routable(rcpt)


def unknown_recipient_reply(rcpt: ParsedAddress, org: OrganizationPolicy) -> Reply | None:
    """An address of an authoritative domain with no mailbox: refused now (550 5.1.1, no
    bounce later, so no backscatter) while "filter recipients who are not in the directory"
    is on; accepted otherwise, as Exchange does, and then forwarded to the virtual server's
    host for unresolved recipients or NDR'd by local delivery."""
    if org.filter_unknown_recipients:
        return Reply(550, f"5.1.1 <{rcpt.address}>: no such mailbox here")
    return _routable(rcpt)


def backup_relay(domain: str, config: ListenerConfig) -> bool:
    """``domain`` is in the address space of a connector that allows relay to it and has this
    virtual server as a bridgehead: accepted from any client (the backup-MX case). As many
    set lookups as the domain has labels."""
    patterns = config.relay_patterns
    return bool(patterns) and any(key in patterns for key in pattern_keys(domain))


def connector_refusal(rcpt: ParsedAddress, sender: str, topology: Topology | None) -> Reply | None:
    """Refuse at RCPT what routing would refuse after the 250: every connector that could
    carry mail from ``sender`` ("" = the null sender) to ``rcpt`` refuses that sender in its
    delivery restrictions, whatever the message. Reads routing's cached snapshot only."""
    if topology is None:
        return None
    route = normal_sender_restriction(rcpt.address, sender.lower(), topology)
    if route is None:
        return None
    return Reply(550, echo(route.status.partition(" ")[2], limit=400))


def _relay_hint(domain: str, config: ListenerConfig) -> str:
    text = f"this server does not accept mail for {domain}"
    if config.relay_allow_authenticated and config.auth_basic:
        return f"{text} from unauthenticated clients; authenticate to relay"
    return f"{text}, and your computer is not allowed to relay through it"


def _routable(rcpt: ParsedAddress) -> Reply | None:
    """Routing and delivery handle dot-atom ASCII local parts only: refuse the others now
    rather than bounce them later."""
    try:
        normalize_address(rcpt.address)
    except (ValidationError, ValueError):
        return Reply(
            553,
            f"5.1.3 <{echo(rcpt.address)}>: this server cannot route a local part like this "
            "(letters, digits, dots and !#$%&'*+-/=?^_`{|}~ only)",
        )
    return None


# --- limits -------------------------------------------------------------------------------


def _message_too_big(limit: int) -> Reply:
    return Reply(552, f"5.3.4 Message size exceeds fixed maximum message size ({limit} bytes)")


def _session_too_big(limit: int) -> Reply:
    return Reply(
        552,
        f"5.3.4 Session size limit exceeded ({limit} bytes for all messages of one "
        "connection); send the rest in a new connection",
    )


def _smallest(*limits: int | None) -> int | None:
    """The strictest of some limits (None = no limit)."""
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None


def _largest(*limits: int | None) -> int | None:
    """The most generous of some limits: None (no limit) beats every number."""
    return None if None in limits else max(limit for limit in limits if limit is not None)


def organization_sizes_apply(config: ListenerConfig, org: OrganizationPolicy) -> bool:
    """Whether an organization size limit is stricter than the virtual server's own: when
    not, every message's limit is the virtual server's and nothing needs working out."""
    own = config.message_size_limit
    return any(
        limit is not None and (own is None or limit < own)
        for limit in (org.sending_size_limit, org.receiving_size_limit)
    )


def message_size_limit(
    config: ListenerConfig, org: OrganizationPolicy, *, sending: bool, receiving: bool
) -> int | None:
    """A message's size limit: the smaller of the virtual server's limit and the
    organization's limits that apply to it. ``sending``: the organization's users send it
    (the session authenticated) or it leaves the organization (a recipient outside the
    accepted domains); ``receiving``: a recipient is in an accepted domain."""
    return _smallest(
        config.message_size_limit,
        org.sending_size_limit if sending else None,
        org.receiving_size_limit if receiving else None,
    )


def largest_message(
    config: ListenerConfig,
    org: OrganizationPolicy,
    *,
    authenticated: bool,
    may_authenticate: bool,
    may_relay: bool,
) -> int | None:
    """The largest message this session could still have accepted (EHLO's SIZE, and the
    declared SIZE at MAIL). Authenticated: the sending limit applies to everything it sends.
    A client that may relay, or may still authenticate, might send either way: the more
    generous of the two. Any other client can only send into the accepted domains: the
    receiving limit."""
    if authenticated:
        org_limit = org.sending_size_limit
    elif may_relay or may_authenticate:
        org_limit = _largest(org.sending_size_limit, org.receiving_size_limit)
    else:
        org_limit = org.receiving_size_limit
    return _smallest(config.message_size_limit, org_limit)


def recipient_size_limit(
    message_limit: int | None,
    rcpt: ParsedAddress,
    config: ListenerConfig,
    org: OrganizationPolicy,
    directory: Directory,
) -> int | None:
    """The message's size limit once this (accepted) recipient is added to it: receiving
    for an accepted domain, sending for a recipient the message leaves the organization to."""
    inbound = accepted_domain(rcpt.domain, directory) is not None
    return _smallest(
        message_limit,
        message_size_limit(config, org, sending=not inbound, receiving=inbound),
    )


def recipient_size_reply(declared: int | None, limit: int | None, address: str) -> Reply | None:
    """MAIL FROM declared SIZE=n, and this recipient's limit is smaller (RFC 1870): the
    recipient is refused, the message may still go to the others."""
    if declared is not None and limit is not None and declared > limit:
        return Reply(
            552,
            f"5.3.4 Message size exceeds fixed maximum message size for <{echo(address)}> "
            f"({limit} bytes)",
        )
    return None


def declared_size_refusal(declared: int | None, limit: int | None) -> Reply | None:
    """MAIL FROM ... SIZE=n over ``limit``."""
    if declared is not None and limit is not None and declared > limit:
        return _message_too_big(limit)
    return None


def declared_size_reply(declared: int | None, config: ListenerConfig) -> Reply | None:
    """MAIL FROM ... SIZE=n over the virtual server's message size limit."""
    return declared_size_refusal(declared, config.message_size_limit)


def session_size_reply(session_bytes: int, config: ListenerConfig) -> Reply | None:
    """``session_bytes``: the messages of this session so far including the current one."""
    limit = config.session_size_limit
    if limit is not None and session_bytes > limit:
        return _session_too_big(limit)
    return None


def size_refusal(
    declared: int, session_bytes: int, config: ListenerConfig, largest: int | None
) -> Reply | None:
    """MAIL FROM ... SIZE=``declared``: over ``largest`` (``largest_message``, or the
    virtual server's message size limit), or over what is left of the session size limit
    after the ``session_bytes`` already accepted in this session."""
    return declared_size_refusal(declared, largest) or session_size_reply(
        session_bytes + declared, config
    )


def message_config(config: ListenerConfig, message_limit: int | None) -> ListenerConfig:
    """The listener's configuration as one message's data is read and answered: its own
    size limit where the organization's limits make it smaller than the virtual server's."""
    if message_limit == config.message_size_limit:
        return config
    return replace(config, message_size_limit=message_limit)


def recipients_limit(config: ListenerConfig, org: OrganizationPolicy) -> int | None:
    """Recipients per message: the smaller of the virtual server's and the organization's."""
    return _smallest(config.recipients_per_message, org.recipients_per_message)


def recipient_count_reply(
    accepted_so_far: int, config: ListenerConfig, org: OrganizationPolicy
) -> Reply | None:
    """Before accepting one more recipient: over the limit, the client sends the rest later
    (RFC 5321 4.5.3.1.10)."""
    limit = recipients_limit(config, org)
    if limit is not None and accepted_so_far >= limit:
        return Reply(
            452, f"4.5.3 Too many recipients (limit {limit} per message); send the rest later"
        )
    return None


def send_limit_reply(username: str, per_hour: int, now: datetime.datetime) -> Reply:
    """The credential's messages for this hour are used up: a temporary refusal that says
    when the next hour (and its allowance) starts."""
    next_hour = now.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    next_hour += datetime.timedelta(hours=1)
    return Reply(
        450,
        f"4.7.1 Send limit reached: {echo(username)} may send {per_hour} messages per hour; "
        f"try again after {next_hour:%H:%M} UTC",
    )


def message_count_reply(messages_so_far: int, config: ListenerConfig) -> Reply | None:
    """Before a new transaction (MAIL FROM): the messages already accepted in this session.
    A 421 reply: close the connection after sending it."""
    limit = config.messages_per_connection
    if limit is not None and messages_so_far >= limit:
        return Reply(
            421,
            f"4.7.0 Too many messages in one connection (limit {limit}); reconnect to send more",
        )
    return None


# --- DATA ---------------------------------------------------------------------------------

_RECEIVED = re.compile(rb"received[ \t]*:", re.IGNORECASE)


def hop_count(header_block: bytes) -> int:
    """The Received header fields of a message's header block (or of a whole message: the
    count stops at the first empty line). Continuation lines do not count."""
    count = 0
    for line in header_block.splitlines():
        if not line:
            break
        if _RECEIVED.match(line):
            count += 1
    return count


def hop_count_reply(header_block: bytes, config: ListenerConfig) -> Reply | None:
    """More Received headers than ``max_hop_count``: the message is probably looping."""
    hops = hop_count(header_block)
    if hops > config.max_hop_count:
        return Reply(
            554,
            f"5.4.6 Too many hops: {hops} Received headers, the limit is {config.max_hop_count}; "
            "the message is probably looping",
        )
    return None


MAX_TEXT_LINE = 998  # octets before the CRLF (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1)


class DataOutcome(enum.Enum):
    """How reading a message's data (after 354) ended."""

    COMPLETE = "complete"  # the lone dot after a message with nothing to refuse
    # A bare CR or LF leaves it open where a next hop thinks the message ends (CVE-2023-51764,
    # CVE-2024-27305): what follows might be commands smuggled past us, so the session ends.
    BARE_LINE_ENDING = "bare line ending"
    # A next hop that drops NUL would read "\r\n\x00.\r\n" as the end of the message;
    # without BINARYMIME (not offered) message data is text, and text has no NUL.
    NUL = "NUL"
    LINE_TOO_LONG = "line too long"
    MESSAGE_TOO_BIG = "message too big"
    SESSION_TOO_BIG = "session too big"
    CLOSED = "closed"  # the session was closed before the end of the message


def line_outcome(*, bare: bool, nul: bool, length: int) -> DataOutcome | None:
    """One line of message data from its facts: a bare CR or LF in it, a NUL in it, its
    length in octets without the transparency dot and the CRLF. A bare line ending comes
    first: it is the refusal that ends the session."""
    if bare:
        return DataOutcome.BARE_LINE_ENDING
    if nul:
        return DataOutcome.NUL
    if length > MAX_TEXT_LINE:
        return DataOutcome.LINE_TOO_LONG
    return None


def data_line_outcome(body: bytes) -> DataOutcome | None:
    """One line of message data without its CRLF, the transparency dot already removed."""
    return line_outcome(bare=b"\r" in body or b"\n" in body, nul=b"\x00" in body, length=len(body))


def data_size_outcome(size: int, session_bytes: int, config: ListenerConfig) -> DataOutcome | None:
    """``size``: the message's octets so far as sent (CRLFs and transparency dots included);
    ``session_bytes``: the messages accepted earlier in this session."""
    limit = config.message_size_limit
    if limit is not None and size > limit:
        return DataOutcome.MESSAGE_TOO_BIG
    limit = config.session_size_limit
    if limit is not None and session_bytes + size > limit:
        return DataOutcome.SESSION_TOO_BIG
    return None


LINE_TOO_LONG = Reply(
    500,
    f"5.5.2 Line too long: at most {MAX_TEXT_LINE} octets and CRLF per line "
    "(RFC 5321 4.5.3.1.6); encode the message (quoted-printable or base64)",
)
_DATA_REPLIES = {
    DataOutcome.BARE_LINE_ENDING: Reply(
        554,
        "5.5.2 Bare CR or LF in message data is not accepted (SMTP smuggling protection); "
        "closing connection",
    ),
    DataOutcome.NUL: Reply(
        554, "5.6.0 Message refused: it contains a NUL character, which mail text may not"
    ),
    DataOutcome.LINE_TOO_LONG: LINE_TOO_LONG,
    DataOutcome.CLOSED: Reply(421, "4.4.2 Connection closed before the end of the message"),
}


def data_reply(outcome: DataOutcome, config: ListenerConfig) -> Reply | None:
    """The reply to a refused message (``None``: COMPLETE, the message goes to intake)."""
    if outcome is DataOutcome.MESSAGE_TOO_BIG:
        return _message_too_big(config.message_size_limit or 0)
    if outcome is DataOutcome.SESSION_TOO_BIG:
        return _session_too_big(config.session_size_limit or 0)
    return _DATA_REPLIES.get(outcome)


def data_ends_session(outcome: DataOutcome) -> bool:
    """After its reply the session ends: what the client sends next cannot be trusted to be
    commands (a bare line ending), or there is no one left to talk to."""
    return outcome in (DataOutcome.BARE_LINE_ENDING, DataOutcome.CLOSED)
