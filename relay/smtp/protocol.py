"""One SMTP session: aiosmtpd's protocol, made to enforce a virtual server's settings.

aiosmtpd parses the commands; this subclass adds what a relay needs around them and asks
``relay.smtp.policy`` (pure functions) for every decision:

* admission before the greeting: paused listener, connection limit, connection control,
  global accept / deny lists, block lists (reverse DNS looked up off the loop when needed);
* MAIL: TLS and authentication requirements, messages per connection, declared SIZE against
  the message (virtual server and organization) and session limits, the sender filter, the
  credential's send limit (one database statement, only for a credential with a limit);
* RCPT: recipients per message, the relay decision and local mailboxes, the recipient filter,
  a declared SIZE against the recipient's size limit (receiving or sending);
* AUTH PLAIN / LOGIN checked in a thread against SMTP credentials, failures slowed down;
* DATA read here in blocks (``relay.smtp.data``) rather than line by line by aiosmtpd, so a
  bare CR or LF anywhere ends the session (SMTP smuggling), NUL and lines over 998 octets are
  refused, and size, session size and hop count get their RFC replies;
* intake (database) in a thread; 250 only once the message is committed;
* what aiosmtpd would echo or store of a client's bytes made safe (EHLO names checked, replies
  printable), and an unexpected error answered once, logged once, without its name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)
from django.db import DatabaseError
from django.utils import timezone

from relay.dns import dnsbl_listing, reverse_name
from relay.intake import Accepted, accept, draft_request
from relay.intake import Envelope as IntakeEnvelope
from relay.metrics import REFUSED
from relay.queue.tracking import RefusalReport, RefusalTally, record_refusals, refusal_class
from relay.smtp import policy
from relay.smtp.addresses import Reply, parse_path
from relay.smtp.auth import check_credentials, first_look
from relay.smtp.config import ListenerConfig
from relay.smtp.data import DataScanner, read_block
from relay.smtp.policy import DataOutcome
from relay.smtp.runtime import receiver
from relay.smtp.send_limits import SendLimit, take_message
from smtpadmin import counters

if TYPE_CHECKING:
    from relay.smtp.supervisor import Listener

log = logging.getLogger("relay.smtp")
# aiosmtpd logs every command at INFO (addresses included), and its warnings quote a client's
# bytes unescaped (a CR or an escape sequence forges log lines); the protocol log is ours.
logging.getLogger("mail.log").setLevel(logging.ERROR)

IDENT = "ESMTP smtpadmin"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure; try again later"
QUEUE_IDS_LOGGED = 20  # a session's log line names at most this many of its messages
# Abuse limits of one session (Postfix's smtpd_junk_command_limit and smtpd_hard_error_limit).
JUNK_COMMAND_LIMIT = 100  # NOOP, RSET, VRFY, HELP, EXPN
HARD_ERROR_LIMIT = 20  # 5xx replies, e.g. guessing recipients
# Command rate: a burst, then this many commands per second; faster clients are slowed down.
COMMAND_BURST = 1000
COMMANDS_PER_SECOND = 200.0
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "EXPN"})
# Reverse DNS and block-list lookups before the greeting wait at most this long.
ADMISSION_DNS_TIMEOUT = 5.0


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with a virtual server's policy; also its own handler.

    aiosmtpd finds its commands, AUTH mechanisms and handler hooks by introspecting every new
    session (``inspect.getmembers``, ``dir``: about a millisecond each time). Here ``__dir__``
    hands it, while it does so, only the names it looks for, found once per class
    (``_protocol_names``); and its command table is ``CommandTable``, which runs every command
    through ``dispatch`` (rate, junk limit, protocol log) without a wrapper per command.

    aiosmtpd internals still used, for want of a public hook (aiosmtpd is pinned):
    ``_smtp_methods`` (replaced by ``CommandTable``: the only place every command passes),
    ``_handle_client`` (admission before its greeting), ``_reader`` / ``_writer`` (DATA, AUTH
    answers, replies with a multi-line one in one write, a last reply written while closing),
    ``_reset_timeout`` / ``_timeout_cb``
    (time-out while reading DATA; dropping a closed session that does not read) and
    ``_set_post_data_state`` (the envelope after DATA).
    """

    def __dir__(self) -> Iterable[str]:
        if self.__dict__.get("introspecting"):
            return _protocol_names(type(self))
        return super().__dir__()

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.runtime = listener.runtime
        self.config: ListenerConfig = listener.config  # fixed for the session's lifetime
        self.organization = self.runtime.organization
        self.directory = self.runtime.directory
        config = self.config
        self.introspecting = True
        super().__init__(
            self,
            # What any session here could send: EHLO narrows it down for each session.
            data_size_limit=policy.largest_message(
                config,
                self.organization,
                authenticated=False,
                may_authenticate=True,
                may_relay=True,
            ),
            enable_SMTPUTF8=True,
            hostname=config.fqdn,
            ident=IDENT,
            tls_context=listener.tls_context,
            timeout=config.connection_timeout,
            auth_require_tls=config.auth_basic_requires_tls,
            auth_exclude_mechanism=() if config.auth_basic else ("PLAIN", "LOGIN"),
            loop=asyncio.get_running_loop(),
        )
        self.introspecting = False
        # aiosmtpd keeps these limits on the class, shared by every session; keep our own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        # aiosmtpd only looks commands up in it (``get``, and ``items`` for HELP): a mapping.
        self._smtp_methods = CommandTable(self)  # type: ignore[assignment]
        self.client_address = ""
        self.client_port = 0
        self.server_address = "-"  # this end of the connection, for the protocol log
        self.client_name: str | None = None  # forward-confirmed reverse DNS name
        self.connected_at = time.time()
        self.messages = 0
        self.queue_ids: list[str] = []  # the session's first messages, for its log line
        self.session_bytes = 0
        self.send_limit: SendLimit | None = None  # the authenticated credential's, if any
        self.message_limit = config.message_size_limit  # the current message's size limit
        self.declared_size: int | None = None  # the current MAIL FROM's SIZE=
        self.in_data = False
        self.data_open = False  # after 354 until the reply: client lines are message data
        self.registered = False
        self.closing = False
        self.closed_transport: Any = None
        self.close_after_data = ""  # a reply: the listener is closing, end after this DATA
        self.junk_commands = 0
        self.hard_errors = 0
        self.tokens = float(COMMAND_BURST)
        self.tokens_at = time.monotonic()
        self.raw_argument = ""
        self.command = ""
        self.command_started = 0.0
        self.bytes_in = 0
        self.continued: list[bytes] = []  # lines of a multi-line reply not sent yet
        # Refusals are one tracking event per session, written at the first and brought up
        # to date when the session ends: refused junk cannot fill the database.
        self.refusals = RefusalTally()
        self.refusal_event: asyncio.Future[int | None] | None = None
        self.refusals_written = 0

    # --- connection -----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.registered:
            return  # the second call comes after STARTTLS
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client_address = _client_ip(str(peer[0]))
        self.client_port = int(peer[1]) if len(peer) > 1 else 0
        self.server_address = self.listener.local_address(transport)
        self.registered = True
        self.listener.register(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self.registered:
            self.registered = False
            self.listener.unregister(self)
            self.write_refusals()
            self.log_session()
        super().connection_lost(error)

    def log_session(self) -> None:
        """One line per session (what Postfix's smtpd "disconnect" line says), its figures
        also as fields for LOG_FORMAT=json."""
        if not log.isEnabledFor(logging.INFO):
            return
        fields = {
            "virtual_server": self.config.name,
            "client": self.client_address,
            "client_port": self.client_port,
            "helo": self.helo,
            "auth_user": self.login_name,
            "tls": self.tls,
            "messages": self.messages,
            "queue_ids": " ".join(self.queue_ids),
            "refusals": self.refusals.refusals,
            "bytes": self.session_bytes,
            "duration_ms": round((time.time() - self.connected_at) * 1000),
        }
        log.info(
            "session ended: %s",
            " ".join(f"{key}={value}" for key, value in fields.items() if value != ""),
            extra=fields,
        )

    async def _handle_client(self) -> None:
        refusal = await self.admission()
        if refusal is not None:
            self.log_line("-", "", str(refusal.code))
            await self.push(str(refusal))
            self.close()
            return
        await super()._handle_client()

    async def admission(self) -> Reply | None:
        """Whether this client may talk to us at all; looks up DNS only when needed."""
        listener = self.listener
        if listener.paused:
            return policy.PAUSED
        limited = listener.take_slot(self)
        if limited is not None:
            return limited
        refusal = await self.admission_checks()
        if refusal is not None:
            listener.release_slot(self)  # a refused session holds no slot while it says goodbye
        return refusal

    async def admission_checks(self) -> Reply | None:
        """Connection control, global lists and block lists, for a session within the limits."""
        config, organization = self.config, self.organization
        resolver = None
        if policy.needs_reverse_dns(config, organization):
            resolver = self.runtime.resolver(config.external_dns_servers)
            self.client_name = await reverse_name(
                self.client_address, resolver, ADMISSION_DNS_TIMEOUT
            )
        listing = None
        if config.apply_connection_filter and organization.block_list_providers:
            resolver = resolver or self.runtime.resolver(config.external_dns_servers)
            listing = await dnsbl_listing(
                self.client_address,
                list(organization.block_list_providers),
                resolver,
                ADMISSION_DNS_TIMEOUT,
            )
        return policy.connection_decision(
            self.client_address,
            self.client_name,
            config,
            organization,
            dnsbl_listing=listing,
        )

    def data_received(self, data: bytes) -> None:
        if self.data_open:
            # DATA is read in blocks, possibly many lines at once: any bytes of the message
            # count as progress for the time-out (RFC 5321 4.5.3.2.6), as a line did.
            self._reset_timeout()
        super().data_received(data)

    def eof_received(self) -> bool | None:
        # aiosmtpd drops what a half-closed client sent before its EOF (QUIT, a whole
        # message): read it to the end and answer it instead; the reader then ends the session.
        self._reader.feed_eof()
        return self.session is None or self.session.ssl is None

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd asks its handler, which is this object: answer here, once."""
        if isinstance(error, asyncio.IncompleteReadError):
            self.close()  # the client's end of input: nothing left to answer
            return "221 2.0.0 End of input"  # not sent: the session is closed
        who = f"session {self.listener.sessions.get(self, '-')} from {self.client_address}"
        if isinstance(error, TLSSetupException):
            log.info("%s: TLS handshake failed: %s", who, error.__cause__ or error)
            return "421 4.7.0 TLS handshake failed"
        if self.data_open:
            # What the client sends next is the rest of its message, never commands.
            self.data_open = False
            self.in_data = False
            log.error("%s: %r in DATA; session closed", who, error, exc_info=error)
            reply = "421 4.3.0 Temporary failure reading the message; closing connection"
            self.terminate(reply)
            return reply  # not sent again: the session is closed
        if isinstance(error, (UnicodeError, asyncio.LimitOverrunError)):
            log.warning("%s: %s input refused: %r", who, self.command or "command", error)
            return "500 5.5.0 Command not understood"
        log.error("%s: %r in %s", who, error, self.command or "a command", exc_info=error)
        return "451 4.3.0 Temporary failure on this server; try again later"

    def close(self) -> None:
        """End the session: replies already written still go out, nothing more is read or
        answered (aiosmtpd's command loop and the DATA reader stop at a transport of None)."""
        self.closing = True
        transport = self.transport
        if transport is not None:
            self.closed_transport = transport
            self.transport = None
            transport.close()

    def _timeout_cb(self) -> None:
        if self.transport is None and self.closed_transport is not None:
            # Closed, but a client that reads nothing keeps its replies from draining.
            self.closed_transport.abort()
            return
        super()._timeout_cb()

    def terminate(self, reply: str = "421 4.3.2 Session terminated by the administrator") -> None:
        """Close the session now (Terminate, Terminate All, stopping the listener)."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(AttributeError, RuntimeError, ConnectionError):
                self._writer.write(reply.encode() + b"\r\n")
        self.close()

    # --- every command: rate, junk and error limits, protocol log ---------------------------
    async def dispatch(self, name: str, method: Command, argument: str | None) -> None:
        """Every command, as aiosmtpd's command loop calls it (through ``CommandTable``)."""
        if self.closing:
            return
        wait = self._take_token()
        if wait:
            await asyncio.sleep(wait)
        if name in JUNK_COMMANDS:
            self.junk_commands += 1
            if self.junk_commands > JUNK_COMMAND_LIMIT:
                await self.push("421 4.7.0 Too many commands without mail, closing")
                self.close()
                return
        self.command = name
        self.raw_argument = argument or ""
        self.command_started = time.monotonic()
        await method(self, argument)

    def _take_token(self) -> float:
        """One command from the session's budget: seconds to wait first (0: none)."""
        now = time.monotonic()
        tokens = min(
            float(COMMAND_BURST), self.tokens + (now - self.tokens_at) * COMMANDS_PER_SECOND
        )
        wait = 0.0
        if tokens < 1:
            wait = (1 - tokens) / COMMANDS_PER_SECOND
            tokens, now = 1.0, now + wait
        self.tokens = tokens - 1
        self.tokens_at = now
        return wait

    async def push(self, status: Any) -> None:
        if self.closing:
            return  # what aiosmtpd answers after we closed is not for the client
        text = status.decode(errors="replace") if isinstance(status, bytes) else str(status)
        if not text.isprintable():
            # aiosmtpd echoes some arguments; a CR, NUL or undecodable byte must not go back.
            text = "".join(c if c.isprintable() else "?" for c in text)
        code = text[:3]
        if text[3:4] == "-":
            # A multi-line reply (EHLO's) goes out in one write with its last line, and is
            # logged once.
            self.continued.append(text.encode() + b"\r\n")
            return
        if self.command:
            argument = self.raw_argument
            if self.command == "AUTH":
                argument = argument.split(" ", 1)[0]  # never the credentials
            self.log_line(self.command, argument, code)
            if not text.startswith("3"):
                self.command = ""
        await self.write_reply(text)
        if code.startswith("5"):
            self.hard_errors += 1
            if self.hard_errors >= HARD_ERROR_LIMIT and not self.closing:
                await self.write_reply("421 4.7.0 Too many errors, closing connection")
                self.close()

    async def write_reply(self, text: str) -> None:
        """Send a reply (after the lines of a multi-line one held back) and wait while the
        client does not read."""
        data = text.encode() + b"\r\n"
        if self.continued:
            data = b"".join([*self.continued, data])
            self.continued.clear()
        self._writer.write(data)
        await self._writer.drain()

    def log_line(self, method: str, argument: str, status: str) -> None:
        protocol_log = self.listener.protocol_log
        if protocol_log is None:
            return
        elapsed = int((time.monotonic() - self.command_started) * 1000) if method != "-" else 0
        protocol_log.write(
            client_ip=self.client_address,
            username=self.login_name or "-",
            server_ip=self.server_address,
            server_port=self.config.port,
            method=method,
            argument=argument,
            status=status,
            bytes_in=self.bytes_in,
            bytes_out=0,
            time_taken_ms=elapsed,
        )
        self.bytes_in = 0

    # --- facts for Current Sessions and intake ---------------------------------------------
    @property
    def helo(self) -> str:
        return (self.session.host_name or "") if self.session else ""

    @property
    def tls(self) -> bool:
        return self.session is not None and self.session.ssl is not None

    @property
    def authenticated(self) -> bool:
        return bool(self.session and self.session.authenticated)

    @property
    def login_name(self) -> str:
        if not self.authenticated or self.session is None:
            return ""
        data = self.session.auth_data
        login = data.login if isinstance(data, LoginPassword) else data
        return login.decode(errors="replace") if isinstance(login, bytes) else str(login or "")

    # --- greeting ---------------------------------------------------------------------------
    async def smtp_HELO(self, hostname: str) -> None:
        refusal = policy.greeting_name_refusal(hostname or "")
        if refusal is not None:
            await self.push(str(refusal).replace("EHLO", "HELO", 1))
            return
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        refusal = policy.greeting_name_refusal(hostname or "")
        if refusal is not None:
            await self.push(str(refusal))
            return
        await super().smtp_EHLO(hostname)

    # --- handler hooks ----------------------------------------------------------------------
    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        return f"250 {self.config.fqdn}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        answer = [responses[0], "250-PIPELINING"]
        size = self.largest_message(at_mail=False)
        answer += [
            f"250-SIZE {size}" if line.startswith("250-SIZE") and size else line
            for line in responses[1:-1]
            if not line.startswith("250-AUTH")
        ]
        mechanisms = policy.auth_mechanisms(self.config, tls=self.tls)
        if mechanisms:
            answer.append("250-AUTH " + " ".join(mechanisms))
        answer.append("250 HELP")
        return answer

    async def smtp_AUTH(self, arg: str) -> None:
        in_transaction = bool(self.envelope is not None and self.envelope.mail_from)
        refusal = policy.auth_decision(
            self.config, tls=self.tls, in_transaction=in_transaction
        ) or policy.tls_refusal(self.config, tls=self.tls)
        if refusal is not None:
            await self.push(str(refusal))
            return
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.session is not None and self.session.host_name:
            refusal = self.mail_refusal(arg or "")
            if refusal is not None:
                await self.push(str(refusal))
                if refusal.code == 421:
                    self.close()
                return
        await super().smtp_MAIL(arg)

    def mail_refusal(self, argument: str) -> Reply | None:
        config = self.config
        # Refused before aiosmtpd reads the SIZE parameter: sender_decision repeats this
        # check at the hook, for a MAIL that gets that far.
        refusal = policy.transaction_refusal(config, authenticated=self.authenticated, tls=self.tls)
        if refusal is not None:
            return refusal
        too_many = policy.message_count_reply(self.messages, config)
        if too_many is not None:
            return too_many
        declared = _declared_size(argument)
        if declared is not None:
            largest = self.largest_message(at_mail=True)
            return policy.size_refusal(declared, self.session_bytes, config, largest)
        return None

    def largest_message(self, *, at_mail: bool) -> int | None:
        """The largest message this session could have accepted (``policy.largest_message``):
        for EHLO's SIZE, or for the transaction a MAIL FROM starts (no AUTH inside it)."""
        config, org = self.config, self.organization
        if not policy.organization_sizes_apply(config, org):
            return config.message_size_limit
        authenticated = self.authenticated
        return policy.largest_message(
            config,
            org,
            authenticated=authenticated,
            may_authenticate=not at_mail and bool(policy.auth_mechanisms(config, tls=self.tls)),
            may_relay=not authenticated
            and policy.may_relay(self.client_address, self.client_name, False, config),
        )

    async def send_limit_refusal(self) -> Reply | None:
        """Take one message from the credential's hourly allowance (all relay processes share
        it); the 450 when it is used up. Only for a credential with a send limit."""
        limit = self.send_limit
        if limit is None:
            return None
        now = timezone.now()
        try:
            taken = await self.runtime.run(take_message, limit, now)
        except DatabaseError as error:
            log.warning("send limit of %s not checked: %r", limit.username, error)
            return Reply(451, "4.3.0 Temporary failure on this server; try again later")
        return None if taken else policy.send_limit_reply(limit.username, limit.per_hour, now)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        parsed = parse_path(
            _after_keyword(self.raw_argument, "FROM:"),
            address,
            sender=True,
            smtputf8="SMTPUTF8" in (option.upper() for option in mail_options),
        )
        if isinstance(parsed, Reply):
            return str(parsed)
        refusal = policy.sender_decision(
            parsed,
            config=self.config,
            org=self.organization,
            authenticated=self.authenticated,
            tls=self.tls,
        )
        refusal = refusal or await self.send_limit_refusal()
        if refusal is not None:
            self.track_rejection(parsed.address, "", refusal)
            return str(refusal)
        self.declared_size = _declared_size(self.raw_argument)
        self.message_limit = policy.message_size_limit(
            self.config, self.organization, sending=self.authenticated, receiving=False
        )
        envelope.mail_from = parsed.address if not parsed.is_null else "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope = self.envelope
        if envelope is not None and envelope.mail_from:
            too_many = policy.recipient_count_reply(
                len(envelope.rcpt_tos), self.config, self.organization
            )
            if too_many is not None:
                await self.push(str(too_many))
                return
        await super().smtp_RCPT(arg)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        parsed = parse_path(
            _after_keyword(self.raw_argument, "TO:"),
            address,
            sender=False,
            smtputf8=bool(envelope.smtp_utf8),
        )
        if isinstance(parsed, Reply):
            return str(parsed)
        refusal = policy.recipient_decision(
            parsed,
            client_ip=self.client_address,
            client_name=self.client_name,
            authenticated=self.authenticated,
            config=self.config,
            org=self.organization,
            directory=self.directory,
        ) or policy.connector_refusal(parsed, _sender(envelope), self.listener.topology)
        if refusal is None and policy.organization_sizes_apply(self.config, self.organization):
            limit = policy.recipient_size_limit(
                self.message_limit, parsed, self.config, self.organization, self.directory
            )
            refusal = policy.recipient_size_reply(self.declared_size, limit, parsed.address)
            if refusal is None:
                self.message_limit = limit
        if refusal is not None:
            self.track_rejection(_sender(envelope), parsed.address, refusal)
            return str(refusal)
        if parsed.address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(parsed.address)
        return "250 2.1.5 Recipient OK"

    def track_rejection(self, sender: str, recipient: str, reply: Reply) -> None:
        reason = refusal_class(str(reply))
        counters.add(REFUSED, {"virtual_server": self.config.name, "reason": reason})
        if not self.organization.message_tracking_enabled:
            return
        if self.refusals.add(sender, recipient, str(reply), timezone.now()):
            self.write_refusals()

    def write_refusals(self) -> None:
        """Create the session's refusal event, or update it with what came since."""
        report = self.refusals.report()
        if report is None or report.refusals == self.refusals_written:
            return
        self.refusals_written = report.refusals
        facts = {
            "virtual_server_id": self.config.id,
            "client_address": self.client_address,
            "client_name": self.client_name or "",
            "auth_user": self.login_name,
        }
        if self.refusal_event is None:
            self.refusal_event = self.listener.background(
                self.runtime.run(record_refusals, None, report, **facts)
            )
        else:
            self.listener.background(self._update_refusals(self.refusal_event, report, facts))

    async def _update_refusals(
        self, created: asyncio.Future[int | None], report: RefusalReport, facts: dict[str, Any]
    ) -> None:
        event_id = await created
        if event_id is not None:
            await self.runtime.run(record_refusals, event_id, report, **facts)

    # --- AUTH PLAIN / LOGIN: decoded here, checked in a thread -----------------------------
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            response = await self.challenge_auth("")
            if not isinstance(response, bytes):
                return AuthResult(success=False, handled=True)  # answered 501 already
            decoded: bytes = response
        else:
            try:
                decoded = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode the base64 data")
                return AuthResult(success=False, handled=True)
        parts = decoded.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN data")
            return AuthResult(success=False, handled=True)
        return await self.check_login(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)  # answered 501 already
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode the base64 data")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)  # answered 501 already
        return await self.check_login(login, password)

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> Any:
        """aiosmtpd's, but an over-long answer is read to its end and refused once (its
        reader raises instead, and the rest of the line would be read as commands)."""
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw))
        line = await self.read_line()
        if line is None:
            await self.push("500 5.5.6 Authentication Exchange line is too long")
            return MISSING
        self.bytes_in += len(line)
        blob = line.strip()
        if blob == b"*":
            await self.push("501 5.7.0 Authentication cancelled")
            return MISSING
        try:
            return base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Cannot decode the base64 data")
            return MISSING

    async def read_line(self) -> bytes | None:
        """One line up to LF; None, with the whole line read and dropped, when it is longer
        than the reader's limit."""
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as overrun:
            await self._reader.read(overrun.consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as overrun:
                await self._reader.read(overrun.consumed)

    async def check_login(self, login: bytes, password: bytes) -> AuthResult:
        # Undecodable bytes stay as surrogates: counted and slowed down, and they match nothing.
        username = login.decode("utf-8", errors="surrogateescape")
        secret = password.decode("utf-8", errors="surrogateescape")
        try:
            facts = {"virtual_server_id": self.config.id, "client_ip": self.client_address}
            look = await self.runtime.run(first_look, username, secret, **facts)
            outcome = look.outcome
            if outcome is None:
                # The name's back-off is waited here, not in a database thread the relay needs.
                if look.pause:
                    await asyncio.sleep(look.pause)
                outcome = await self.runtime.run(check_credentials, username, secret, **facts)
        except DatabaseError as error:
            # The credentials cannot be checked now: a temporary failure, never "invalid".
            log.warning("AUTH from %s not checked: %r", self.client_address, error)
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if outcome.ok:
            self.send_limit = outcome.send_limit
            return AuthResult(
                success=True,
                auth_data=LoginPassword(outcome.username.encode(), b""),
                message=outcome.reply,
            )
        if outcome.delay:
            await asyncio.sleep(outcome.delay)
        return AuthResult(success=False, handled=False, message=outcome.reply)

    # --- DATA --------------------------------------------------------------------------------
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # "In DATA" lasts until the reply is sent: stopping the listener waits for it, so a
        # message stored is never answered with anything but its 250.
        self.in_data = self.data_open = True
        config = policy.message_config(self.config, self.message_limit)
        try:
            content, outcome = await self.read_data(config)
            if outcome is not DataOutcome.COMPLETE:
                self._set_post_data_state()
                self.data_open = False
                await self.push(str(policy.data_reply(outcome, config)))
                if policy.data_ends_session(outcome):
                    self.close()
                return
            reply = await self.accept_message(content)
            self._set_post_data_state()
            self.data_open = False
            await self.push(reply)
        finally:
            self.in_data = False
        if self.close_after_data:
            self.terminate(self.close_after_data)

    async def read_data(self, config: ListenerConfig) -> tuple[bytes, DataOutcome]:
        """The message up to the lone dot, dot-unstuffed, and how it ended (``relay.smtp.data``).
        A refused message is read to its end first (RFC 5321 4.2.5), so the session goes on
        as after RSET; a bare CR or LF refuses at once: what follows it might be smuggled
        commands."""
        scanner = DataScanner(config, self.session_bytes)
        while not scanner.done:
            if self.transport is None:  # closed meanwhile: the message is incomplete
                return b"", DataOutcome.CLOSED
            block = await read_block(self._reader, scanner)
            self._reset_timeout()
            self.bytes_in += len(block)
            scanner.feed(block)
        assert scanner.outcome is not None
        return scanner.content, scanner.outcome

    async def accept_message(self, content: bytes) -> str:
        envelope = self.envelope
        assert envelope is not None
        header_end = content.find(b"\r\n\r\n")
        header_block = content if header_end < 0 else content[: header_end + 2]
        looping = policy.hop_count_reply(header_block, self.config)
        if looping is not None:
            for recipient in envelope.rcpt_tos:
                self.track_rejection(_sender(envelope), recipient, looping)
            return str(looping)
        intake = IntakeEnvelope(
            virtual_server_id=self.config.id,
            sender=_sender(envelope),
            recipients=tuple(envelope.rcpt_tos),
            content=content,
            client_address=self.client_address,
            client_name=self.client_name or "",
            helo=self.helo,
            auth_user=self.login_name,
            tls=self.tls,
            esmtp=bool(self.session and self.session.extended_smtp),
            smtputf8=bool(envelope.smtp_utf8),
        )
        topology = self.listener.topology
        try:
            if topology is None:  # no snapshot yet: intake reads the configuration itself
                accepted = await self.runtime.run(accept, intake)
            else:
                request = draft_request(
                    intake, topology, receiver(self.config, self.runtime.organization)
                )
                # The writer commits it with the messages of other sessions, before the 250.
                accepted = Accepted.of(await self.runtime.writer.place(request))
        except Exception:
            log.exception("intake failed for a message from %s", self.client_address)
            return "451 4.3.0 Temporary failure storing the message; try again later"
        self.messages += 1
        if len(self.queue_ids) < QUEUE_IDS_LOGGED:
            self.queue_ids.append(accepted.queue_id)
        self.session_bytes += len(content)
        self.listener.deliver_local_soon(accepted.local_entry_ids)
        if accepted.refused:
            self.listener.report_refused_soon(accepted.message_pk)
        return accepted.reply


Command = Callable[[RelaySMTP, "str | None"], Awaitable[None]]


_NAMES: dict[type, tuple[str, ...]] = {}
_COMMANDS: dict[type, dict[str, tuple[Command, dict[str, Any]]]] = {}


def _protocol_names(cls: type) -> tuple[str, ...]:
    """What aiosmtpd's introspection of a new session looks for: commands, AUTH mechanisms
    and handler hooks (the session is its own handler). Found once per class."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(
            n for n in dir(cls) if n.startswith(("smtp_", "auth_", "handle_"))
        )
    return names


def _commands(cls: type) -> dict[str, tuple[Command, dict[str, Any]]]:
    """The class's commands: each method, and what HELP reads of it (aiosmtpd's ``@syntax``,
    from the nearest class that declares it: an override keeps the syntax it overrides)."""
    commands = _COMMANDS.get(cls)
    if commands is None:
        commands = _COMMANDS[cls] = {
            n[len("smtp_") :]: (getattr(cls, n), _syntax(cls, n))
            for n in dir(cls)
            if n.startswith("smtp_")
        }
    return commands


def _syntax(cls: type, attribute: str) -> dict[str, Any]:
    for owner in cls.__mro__:
        method = vars(owner).get(attribute)
        if method is not None and hasattr(method, "__smtp_syntax__"):
            return {k: v for k, v in vars(method).items() if k.startswith("__smtp_syntax")}
    return {}


class CommandTable(Mapping[str, Callable[["str | None"], Awaitable[None]]]):
    """aiosmtpd's table of commands (its ``_smtp_methods``) for one session: the class's
    ``smtp_*`` methods, each called through the session's ``dispatch``. A command's callable
    is made the first time the session uses it, and keeps what HELP reads (its syntax)."""

    __slots__ = ("bound", "commands", "session")

    def __init__(self, session: RelaySMTP) -> None:
        self.session = session
        self.commands = _commands(type(session))
        self.bound: dict[str, Callable[[str | None], Awaitable[None]]] = {}

    def __getitem__(self, name: str) -> Callable[[str | None], Awaitable[None]]:
        bound = self.bound.get(name)
        if bound is None:
            method, syntax = self.commands[name]
            command = functools.partial(self.session.dispatch, name, method)
            command.__dict__.update(syntax)
            bound = self.bound[name] = command
        return bound

    def __iter__(self) -> Iterator[str]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)


def _sender(envelope: Envelope) -> str:
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def _after_keyword(raw: str, keyword: str) -> str:
    """The argument of MAIL FROM: / RCPT TO: after the keyword, path and parameters as sent."""
    text = raw.strip()
    if text[: len(keyword)].upper() == keyword:
        text = text[len(keyword) :].strip()
    return text


def _declared_size(argument: str) -> int | None:
    for parameter in argument.split():
        name, _, value = parameter.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def _client_ip(address: str) -> str:
    """The client as every list compares it (IPv4-mapped IPv6 as IPv4, no zone)."""
    try:
        return policy.normal_client_ip(address)
    except ValueError:  # not an IP socket: keep what the transport says
        return address
