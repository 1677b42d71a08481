"""The SMTP client of outbound delivery: one connection to the first usable hop of a plan,
carrying messages handed out one at a time while it is open (``send_stream``, each message's
replies reported as they arrive), and a reply for every recipient.

Synchronous (``smtplib``), because the Celery worker that calls it is. What happens:

* Hops are tried in order. A hop is skipped for the next one when it cannot be used at all:
  connection refused or timed out, a greeting other than 220 (a 421 "try later", a 554),
  a connection dropped or timed out before the first MAIL FROM was answered, EHLO and HELO
  refused, TLS required (or AUTH configured) and not offered, a failed TLS handshake or
  certificate check. When no hop is left, the batch comes back with ``connection_error`` (the
  last hop's reason) and ``connection_level`` set: every recipient waits for a retry.
* On the hop that works: EHLO (or HELO when configured; EHLO refused with 5xx falls back to
  HELO, RFC 5321 section 4.1.4), STARTTLS when offered (``opportunistic``) or insisted on
  (``required``: no STARTTLS means "4.7.10 TLS required by policy but not offered", never a
  downgrade), EHLO again, AUTH PLAIN (else LOGIN) when credentials are configured. A refused
  AUTH is the reply of every recipient of the batch: 5xx permanent, 4xx temporary, as the
  remote server said (the engine's reply rules have the last word).
* Messages one after another on that connection, RSET between them (a connection the next
  hop closed before a message began, while it waited for mail or between messages, is opened
  again for that message: it was not an attempt): MAIL FROM (the sender's
  domain replaced by the masquerade domain when one is set), RCPT TO for each recipient, DATA.
  A recipient's result is its RCPT reply when that was not 2xx, else the reply to the message's
  final dot (or to DATA).
* A 421, a dropped connection or a time-out in the middle: the recipients still open in that
  message and every later message get that temporary result ("4.4.2 ... timed out while
  sending end of data"), and the connection is closed.

The socket is closed before ``send_stream`` returns, whatever happened. Every command waits
at most ``options.timeout`` seconds for its reply (and for each block of the message).
"""

from __future__ import annotations

import base64
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from relay.delivery.nexthop import Hop, HopPlan

log = logging.getLogger("relay.delivery")

TLS_MODES = ("none", "opportunistic", "required")
# The message goes out in blocks of this size, each with the full time-out: a big message
# on a slow link must not time out because it is big.
BLOCK_SIZE = 64 * 1024
DROPPED = 451  # the code of results we make up for a lost or timed-out conversation
QUIT_TIMEOUT = 30.0  # seconds for the goodbye: the mail is out, no need to wait long


@dataclass(frozen=True)
class OutboundOptions:
    """How to talk to the next hop: the connector's outbound security when it has one, else
    the virtual server's."""

    helo_name: str
    use_helo: bool = False  # HELO instead of EHLO (no STARTTLS, no AUTH, no SIZE)
    tls: str = "none"  # "none" | "opportunistic" | "required"
    tls_verify: bool = True  # check the certificate chain and the hop's name
    ca_file: str | None = None  # trust only this CA file (None: the system's store)
    username: str = ""  # AUTH PLAIN/LOGIN when set
    password: str = ""
    timeout: float = 600.0  # seconds per command (Exchange's outbound time-out)
    # Replaces the domain of the envelope sender (MAIL FROM) of every message, as Exchange's
    # "Masquerade domain" does; the null sender stays null; headers are not touched.
    mail_from_domain_masquerade: str = ""

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {self.tls!r}")
        if not self.timeout > 0:
            raise ValueError("timeout must be more than 0 seconds")


@dataclass(frozen=True)
class OutboundMessage:
    key: int  # the queue entry's id
    sender: str  # "" = the null sender <>
    recipients: tuple[str, ...]
    content: bytes  # CRLF line endings (bare LF is converted)
    smtputf8: bool = False  # received with SMTPUTF8: ask for it when the hop offers it


@dataclass(frozen=True)
class RecipientResult:
    """The reply for one recipient: its RCPT reply when that refused it, else the reply to
    DATA / the final dot, else the reply we made up for a lost connection (451)."""

    code: int
    text: str  # the reply's text without the code ("5.1.1 No such user"), lines joined

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class MessageResult:
    key: int
    recipients: dict[str, RecipientResult]


@dataclass(frozen=True)
class BatchResult:
    results: tuple[MessageResult, ...]  # every message, once a hop took the connection
    connection_error: str = ""  # no hop could be used: the last hop's reason
    connection_level: bool = False  # that failure was at the connection level (not DNS)
    hop: str = ""  # "mx1.example.org [192.0.2.1]:25": the hop that took the batch
    hop_errors: tuple[str, ...] = ()  # why each skipped hop was skipped, in order
    # The conversation ended early (421, lost connection) or AUTH was refused: the result of
    # every message it did not get to.
    ended: RecipientResult | None = None


class _HopFailed(Exception):
    """This hop cannot be used: try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Broken(Exception):
    """The conversation ended in the middle of the batch; ``result`` is for what is left."""

    def __init__(self, result: RecipientResult) -> None:
        super().__init__(str(result))
        self.result = result


class _Stale(_Broken):
    """The connection was gone before the next message began (the next hop closed it while
    it was idle, or between messages): that message was not attempted at all."""


@dataclass(frozen=True)
class _Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def result(self) -> RecipientResult:
        return RecipientResult(self.code, self.text)


def _timed_out(error: BaseException) -> bool:
    """Was a socket time-out behind this? (smtplib wraps it in SMTPServerDisconnected.)"""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def masquerade(sender: str, domain: str) -> str:
    """The envelope sender with its domain replaced by ``domain`` (unchanged without one, and
    for the null sender)."""
    if not domain or not sender or "@" not in sender:
        return sender
    return f"{sender.rpartition('@')[0]}@{domain}"


def tls_context(options: OutboundOptions) -> ssl.SSLContext:
    """The client side of STARTTLS: TLS 1.2 or better; with ``tls_verify`` the chain must lead
    to ``ca_file`` (or to the system's CAs) and the certificate must name the hop."""
    context = ssl.create_default_context(cafile=options.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not options.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def wire_content(content: bytes) -> bytes:
    """The message as DATA sends it: CRLF line endings, dot-stuffed (RFC 5321 section
    4.5.2), ending in CRLF, without the final dot."""
    body = re.sub(rb"\r?\n", b"\r\n", content)
    body = re.sub(rb"(?m)^\.", b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def _everyone(message: OutboundMessage, result: RecipientResult) -> MessageResult:
    return MessageResult(message.key, {address: result for address in message.recipients})


def _replies(
    message: OutboundMessage, outcome: dict[str, RecipientResult], broken: RecipientResult | None
) -> MessageResult:
    return MessageResult(
        message.key,
        {address: outcome.get(address) or broken or _NO_REPLY for address in message.recipients},
    )


class _Session:
    """One connection to one hop, from the greeting to QUIT."""

    def __init__(self, hop: Hop, options: OutboundOptions) -> None:
        self.hop = hop
        self.options = options
        self.smtp = smtplib.SMTP(local_hostname=options.helo_name, timeout=options.timeout)
        # A MAIL FROM was answered on this connection: from then on a failure is the batch's
        # (the remaining mail waits), no longer a reason to try the next hop.
        self.sent_mail = False

    def close(self) -> None:
        self.smtp.close()

    # -- one step of the conversation --------------------------------------------------

    def fail(self, reason: str) -> NoReturn:
        self.smtp.close()
        if not self.sent_mail:
            raise _HopFailed(reason)
        raise _Broken(RecipientResult(DROPPED, reason))

    def _lost(self, error: BaseException, doing: str) -> NoReturn:
        if _timed_out(error):
            self.fail(f"4.4.2 Conversation with {self.hop} timed out while {doing}")
        self.fail(f"4.4.2 Lost connection with {self.hop} while {doing}")

    def reply(self, doing: str) -> _Reply:
        """The next reply. A lost connection, a time-out or a 421 ends the conversation:
        ``_HopFailed`` before a MAIL FROM was answered, ``_Broken`` after."""
        try:
            code, message = self.smtp.getreply()
        except smtplib.SMTPResponseException:  # a line too long (smtplib closed)
            self.fail(f"4.4.2 {self.hop} sent a reply line too long while {doing}")
        except (OSError, smtplib.SMTPException) as error:
            self._lost(error, doing)
        lines = tuple(message.decode("utf-8", "replace").split("\n"))
        answer = _Reply(code, lines)
        if code == -1:
            self.fail(f"4.4.2 {self.hop} answered with garbage while {doing}")
        if code == 421:
            self.smtp.close()
            if not self.sent_mail:
                raise _HopFailed(f"4.4.2 {self.hop} answered 421 {answer.text} while {doing}")
            raise _Broken(answer.result())
        return answer

    def command(self, line: str, *, doing: str) -> _Reply:
        try:
            self.smtp.putcmd(line)
        except (OSError, smtplib.SMTPException) as error:
            self._lost(error, doing)
        return self.reply(doing)

    # -- opening -----------------------------------------------------------------------

    def open(self) -> RecipientResult | None:
        """Connect, greet, secure, authenticate. Raises ``_HopFailed`` when this hop cannot
        be used; returns the reply of a refused AUTH (for every recipient), else None."""
        hop, options = self.hop, self.options
        try:
            self.smtp.sock = socket.create_connection((hop.address, hop.port), options.timeout)
            # Every write is a whole command or block, and a reply is awaited after it:
            # nothing to gain from Nagle's algorithm, only its wait for delayed ACKs.
            self.smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            raise _HopFailed(f"4.4.1 Connection to {hop} timed out") from None
        except ConnectionRefusedError:
            raise _HopFailed(f"4.4.1 Connection refused by {hop}") from None
        except OSError as error:
            raise _HopFailed(f"4.4.1 Cannot connect to {hop}: {error.strerror or error}") from None
        greeting = self.reply("waiting for the greeting")
        if greeting.code != 220:
            raise _HopFailed(f"4.4.2 {hop} greeted with {greeting.code} {greeting.text}")
        self.greet()
        if options.tls != "none" and self.smtp.has_extn("starttls"):
            self.starttls()
        if options.tls == "required" and not isinstance(self.smtp.sock, ssl.SSLSocket):
            why = " (HELO is configured: no STARTTLS)" if options.use_helo else ""
            raise _HopFailed(f"4.7.10 TLS required by policy but not offered by {hop}{why}")
        if options.username:
            return self.authenticate()
        return None

    def greet(self) -> None:
        name = self.options.helo_name
        self.smtp.esmtp_features = {}
        if not self.options.use_helo:
            answer = self.command(f"EHLO {name}", doing="sending EHLO")
            if answer.code == 250:
                self._features(answer.lines[1:])
                return
            if answer.code < 500:
                raise _HopFailed(f"4.4.2 {self.hop} refused EHLO: {answer.code} {answer.text}")
            # RFC 5321 section 4.1.4: a server that does not know EHLO may still know HELO.
        answer = self.command(f"HELO {name}", doing="sending HELO")
        if answer.code != 250:
            raise _HopFailed(f"4.4.2 {self.hop} refused HELO: {answer.code} {answer.text}")

    def _features(self, lines: Sequence[str]) -> None:
        features: dict[str, str] = {}
        for line in lines:
            keyword, _, params = line.strip().partition(" ")
            key = keyword.lower()
            if key == "auth" or key.startswith("auth="):  # "AUTH=LOGIN": the old spelling
                features["auth"] = f"{features.get('auth', '')} {params}".strip()
            elif key:
                features[key] = params
        self.smtp.esmtp_features = features
        self.smtp.does_esmtp = True

    def starttls(self) -> None:
        hop, smtp = self.hop, self.smtp
        answer = self.command("STARTTLS", doing="sending STARTTLS")
        assert smtp.sock is not None
        if answer.code != 220:
            if self.options.tls == "required":
                raise _HopFailed(f"4.7.10 {hop} refused STARTTLS: {answer.code} {answer.text}")
            log.info("%s refused STARTTLS (%s); going on without TLS", hop, answer.text)
            return
        try:
            smtp.sock = tls_context(self.options).wrap_socket(smtp.sock, server_hostname=hop.host)
        except ssl.SSLCertVerificationError as error:
            smtp.close()
            raise _HopFailed(
                f"4.7.5 TLS certificate of {hop} not accepted: {error.verify_message}"
            ) from None
        except OSError as error:  # ssl.SSLError is one
            smtp.close()
            why = "timed out" if _timed_out(error) else getattr(error, "reason", None) or error
            raise _HopFailed(f"4.7.5 TLS handshake with {hop} failed: {why}") from None
        smtp.file = None
        self.greet()  # RFC 3207 section 4.2: forget what was said in the clear, ask again

    def authenticate(self) -> RecipientResult | None:
        offered = (self.smtp.esmtp_features.get("auth") or "").upper().split()
        user, password = self.options.username, self.options.password
        if "PLAIN" in offered:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            answer = self.command(f"AUTH PLAIN {token}", doing="sending AUTH")
        elif "LOGIN" in offered:
            answer = self.command("AUTH LOGIN", doing="sending AUTH")
            for secret in (user, password):
                if answer.code != 334:
                    break
                answer = self.command(base64.b64encode(secret.encode()).decode(), doing="AUTH")
        elif self.options.use_helo:
            raise _HopFailed(f"4.7.0 AUTH needs EHLO, but HELO is configured for {self.hop}")
        else:
            raise _HopFailed(f"4.7.0 {self.hop} does not offer AUTH PLAIN or LOGIN")
        if answer.code == 235:
            return None
        if answer.code == 334:  # more questions than PLAIN/LOGIN have: give up on it
            self.command("*", doing="cancelling AUTH")
            answer = _Reply(535, (f"5.7.8 {self.hop} asked for more AUTH data than expected",))
        log.info("%s refused AUTH: %s %s", self.hop, answer.code, answer.text)
        return answer.result()

    # -- the mail ----------------------------------------------------------------------

    def deliver(
        self,
        take: Callable[[], OutboundMessage | None],
        report: Callable[[MessageResult], None],
        tick: Callable[[], None],
    ) -> RecipientResult | None:
        """Messages from ``take`` one after another until it has none, each one's replies to
        ``report`` as soon as they are in. Returns the result that ended the conversation
        early (a 421, a lost connection), None when it ended with QUIT."""
        while (message := take()) is not None:
            tick()
            outcome: dict[str, RecipientResult] = {}
            try:
                try:
                    self.transaction(message, outcome)
                except _Stale as stale:
                    # Not an attempt at this message: it goes on a new connection.
                    log.info("%s closed the connection between messages: %s", self.hop, stale)
                    self.reconnect()
                    self.transaction(message, outcome)
            except _Broken as error:
                self.smtp.close()
                log.info("Delivery through %s ended early: %s", self.hop, error.result)
                report(_replies(message, outcome, error.result))
                return error.result
            report(_replies(message, outcome, None))
        self.quit()
        return None

    def reconnect(self) -> None:
        """A new connection to the same hop, for the message the old one could not begin.
        Raises ``_Broken`` when it cannot be opened (or AUTH is refused now)."""
        self.smtp.close()
        options = self.options
        self.smtp = smtplib.SMTP(local_hostname=options.helo_name, timeout=options.timeout)
        self.sent_mail = False
        try:
            refused = self.open()
        except _HopFailed as failure:
            raise _Broken(RecipientResult(DROPPED, failure.reason)) from None
        if refused is not None:
            self.quit()
            raise _Broken(refused)

    def quit(self) -> None:
        """Say goodbye if the connection is still there; never fails."""
        if self.smtp.sock is None:
            return
        try:
            self.smtp.sock.settimeout(min(self.options.timeout, QUIT_TIMEOUT))
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass  # a rude goodbye changes nothing

    def transaction(self, message: OutboundMessage, outcome: dict[str, RecipientResult]) -> None:
        """One message: fills ``outcome`` with a result per recipient; raises ``_Broken``
        (leaving the open recipients out) when the connection ends on the way."""
        hop, smtp = self.hop, self.smtp
        if self.sent_mail:
            try:
                answer = self.command("RSET", doing="sending RSET")
            except _Broken as gone:  # lost, timed out or 421 before this message began
                raise _Stale(gone.result) from None
            if not answer.ok:
                why = f"4.4.2 {hop} refused RSET: {answer.code} {answer.text}"
                raise _Broken(RecipientResult(DROPPED, why))
        sender = masquerade(message.sender, self.options.mail_from_domain_masquerade)
        content = wire_content(message.content)
        refusal = self._refusal(sender, message, len(content))
        if refusal is not None:
            outcome.update(_everyone(message, refusal).recipients)
            return
        params = []
        if smtp.has_extn("size"):
            params.append(f"SIZE={len(content)}")
        if not content.isascii() and smtp.has_extn("8bitmime"):
            params.append("BODY=8BITMIME")
        utf8 = smtp.has_extn("smtputf8") and (message.smtputf8 or not _ascii(sender, message))
        if utf8:
            params.append("SMTPUTF8")
        smtp.command_encoding = "utf-8" if utf8 else "ascii"
        answer = self.command(
            " ".join([f"MAIL FROM:<{sender}>", *params]), doing="sending MAIL FROM"
        )
        self.sent_mail = True
        if not answer.ok:
            outcome.update(_everyone(message, answer.result()).recipients)
            return
        accepted = []
        for address in message.recipients:
            answer = self.command(f"RCPT TO:<{address}>", doing="sending RCPT TO")
            if answer.ok:
                accepted.append(address)
            else:
                outcome[address] = answer.result()
        if not accepted:
            return
        answer = self.command("DATA", doing="sending DATA")
        if answer.code == 354:
            self._send_content(content)
            answer = self.reply("sending end of data -- message may be sent more than once")
        for address in accepted:
            outcome[address] = answer.result()

    def _refusal(self, sender: str, message: OutboundMessage, size: int) -> RecipientResult | None:
        """Why this message cannot go through this hop before a word is said, if it cannot."""
        if any("\r" in a or "\n" in a for a in (sender, *message.recipients)):
            return RecipientResult(553, "5.1.3 An address contains a line break")
        if not _ascii(sender, message) and not self.smtp.has_extn("smtputf8"):
            return RecipientResult(
                550, f"5.6.7 {self.hop} does not offer SMTPUTF8, which a non-ASCII address needs"
            )
        limit = self.smtp.esmtp_features.get("size", "").strip()
        if limit.isdigit() and 0 < int(limit) < size:
            return RecipientResult(
                552, f"5.3.4 Message too big for {self.hop}: {size} bytes, it takes {limit}"
            )
        return None

    def _send_content(self, content: bytes) -> None:
        """The message and the final dot, the dot in the last block's write: a dot written
        on its own would wait for the acknowledgement of the block before it (Nagle's
        algorithm against the next hop's delayed ACK: 40 ms per message on Linux)."""
        assert self.smtp.sock is not None
        try:
            starts = range(0, len(content), BLOCK_SIZE)
            for start in starts[:-1]:
                self.smtp.sock.sendall(content[start : start + BLOCK_SIZE])
            self.smtp.sock.sendall(content[starts[-1] if starts else 0 :] + b".\r\n")
        except OSError as error:
            self._lost(error, "sending the message")


def _ascii(sender: str, message: OutboundMessage) -> bool:
    return sender.isascii() and all(address.isascii() for address in message.recipients)


# Never shown: every recipient gets a reply or the batch's. A guard, not a result.
_NO_REPLY = RecipientResult(DROPPED, "4.4.2 No reply for this recipient")


def send_stream(
    plan: HopPlan,
    take: Callable[[], OutboundMessage | None],
    options: OutboundOptions,
    progress: Callable[[], None] | None = None,
    report: Callable[[MessageResult, str], None] | None = None,
) -> BatchResult:
    """Deliver the messages that ``take`` hands out one at a time until it has no more (the
    engine claims more mail while the connection is open, and may wait for mail queued
    meanwhile) over one connection to the first usable hop of ``plan`` (see the module
    docstring), each message's replies going to ``report`` (with the hop's label) as soon as
    they are in (the engine records them at once, so a worker that dies mid-connection sends
    again only the message it was sending). A message is taken only when the connection is
    ready for it; the one a skipped hop was given goes to the next hop. ``results`` holds what
    was reported; when the conversation ended early (or AUTH was refused), ``ended`` is the
    result of every message not taken. Without hops, ``connection_error`` is the plan's error
    and ``connection_level`` is false: a DNS problem is not the next hop's fault.
    ``progress`` is called before each hop is tried and before each message (the engine
    renews its lease: a slow next hop must not let the claim run out)."""
    tick = progress or (lambda: None)
    tell = report or (lambda found, hop: None)
    first = take()
    if first is None:
        return BatchResult(())
    if not plan.hops:
        return BatchResult((), connection_error=plan.error or "4.4.0 No next hop")
    held: list[OutboundMessage] = [first]  # taken, not yet answered
    results: list[MessageResult] = []
    label = ""  # the hop being tried

    def next_message() -> OutboundMessage | None:
        if held:
            return held[0]
        found = take()
        if found is not None:
            held.append(found)
        return found

    def answered(found: MessageResult) -> None:
        held.clear()
        results.append(found)
        tell(found, label)

    skipped: list[str] = []
    for hop in plan.hops:
        tick()
        label = hop.label
        session = _Session(hop, options)
        ended: RecipientResult | None = None
        try:
            ended = session.open()
            if ended is not None:
                session.quit()
                for message in list(held):
                    answered(_everyone(message, ended))
            else:
                ended = session.deliver(next_message, answered, tick)
        except _HopFailed as failure:
            log.info("Skipping %s: %s", hop, failure.reason)
            skipped.append(failure.reason)
            session.quit()  # when it still listens (TLS or AUTH not offered, EHLO refused)
            continue
        finally:
            session.close()
        return BatchResult(tuple(results), hop=hop.label, hop_errors=tuple(skipped), ended=ended)
    return BatchResult(
        (), connection_error=skipped[-1], connection_level=True, hop_errors=tuple(skipped)
    )
