"""Next hops for delivery tests: real SMTP servers (aiosmtpd) on free loopback ports, with a
behaviour each test sets, and a record of what they were told.

    def test_it_delivers(sink: SinkFactory) -> None:
        mx = sink()                                            # accepts everything
        mx.rcpt = lambda address: "550 5.1.1 No such user" if "nobody" in address else None
        mx.greeting = "421 4.3.2 Not now"                   # answers the connection so, hangs up
        mx.drop_at("END-OF-DATA")                           # hangs up instead of answering the dot
        mx.drop_at("ACCEPTED")                              # takes the message, then hangs up
        mx.stall_at("DATA", 5.0)                            # waits before answering DATA
        secure = sink(tls=True, names=["mx1.example.org"])  # offers STARTTLS; secure.ca_file
        guarded = sink(auth=("relay", "secret"))            # AUTH PLAIN/LOGIN required
        ... deliver to mx.smart_host ("[127.0.0.1]:port") or mx.port ...
        assert mx.messages[0].rcpt_tos == ["bob@example.org"]
        assert mx.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]

Stages for ``drop_at`` / ``stall_at``: GREETING (before the banner), EHLO (EHLO or HELO),
STARTTLS, AUTH, MAIL, RCPT, DATA (the DATA command), END-OF-DATA (after the final dot, before the
reply), ACCEPTED (the sink took the message, then no reply: the client must assume it was not
delivered, and the copy it sends again is a duplicate), RSET. ``after=n`` limits it to
connections that have already accepted n messages (a drop in the middle of a batch). A reply
that starts with 421 is followed by hanging up, as RFC 5321 section 3.8 says a server does.

Every server listens on 127.0.0.1 only; the fixture stops them after the test.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Reply = str | None  # None: the usual 250
STAGES = frozenset(
    {
        "GREETING",
        "EHLO",
        "STARTTLS",
        "AUTH",
        "MAIL",
        "RCPT",
        "DATA",
        "END-OF-DATA",
        "ACCEPTED",
        "RSET",
    }
)


@dataclass
class Received:
    """One message the sink accepted (or is being asked to accept, for ``data``)."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    helo: str
    mail_options: list[str]
    tls: bool
    auth_user: str | None


@dataclass
class _Trap:
    stage: str
    after: int
    seconds: float = 0.0


@dataclass(eq=False)
class Sink:
    """One loopback SMTP server. Change the behaviour attributes at any time; each new command
    reads them."""

    hostname: str = "sink.test"
    tls: bool = False
    names: Sequence[str] = ()
    auth: tuple[str, str] | None = None
    auth_exclude: Sequence[str] = ()  # mechanisms not offered, e.g. ("PLAIN",)
    size_limit: int | None = 33_554_432  # the EHLO SIZE (None: no SIZE extension)
    smtputf8: bool = True  # offer SMTPUTF8
    esmtp: bool = True  # False: an RFC 821 server, answering EHLO with 500
    timeout: float = 300.0  # seconds a connection may wait for a command: then 421, hang up
    # -- behaviour -------------------------------------------------------------------------
    greeting: str | None = None  # sent instead of "220 ...", then the sink hangs up
    mail: Callable[[str], Reply] = field(default=lambda sender: None)
    rcpt: Callable[[str], Reply] = field(default=lambda address: None)
    data: Callable[[Received], Reply] = field(default=lambda message: None)
    auth_failure: str = "535 5.7.8 Authentication credentials invalid"
    # -- the record --------------------------------------------------------------------------
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    most_open: int = 0  # the most connections open at the same time
    drops: int = 0  # connections closed by a drop_at trap
    # What the test's own behaviour callbacks raised (aiosmtpd would only answer 500 for it);
    # the ``sink`` fixture fails the test when there is any.
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._drops: list[_Trap] = []
        self._stalls: list[_Trap] = []
        self._directory = Path(tempfile.mkdtemp(prefix="sink-"))
        self.cert_file = self._directory / "cert.pem"
        self.key_file = self._directory / "key.pem"
        self._tls_context: ssl.SSLContext | None = None
        if self.tls:
            self._write_certificate()
        self._socket: socket.socket | None = None
        self._controller: _Controller | None = None

    # -- running ---------------------------------------------------------------------------

    @property
    def smart_host(self) -> str:
        """This sink as a smart host entry: ``[127.0.0.1]:port``."""
        return f"[{self.host}]:{self.port}"

    @property
    def ca_file(self) -> str:
        """The sink's self-signed certificate, for ``OutboundOptions.ca_file``."""
        return str(self.cert_file)

    def start(self) -> Sink:
        # Bound before the controller starts: the port is ours, no probe-and-hope.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(50)
        self._socket = listener
        self.port = int(listener.getsockname()[1])
        self._controller = _Controller(self)
        self._controller.start()
        self.reset_record()  # forget the controller's own probe connection
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        shutil.rmtree(self._directory, ignore_errors=True)

    # -- behaviour -------------------------------------------------------------------------

    def drop_at(self, stage: str, *, after: int = 0) -> None:
        """Hang up without a reply at ``stage`` (in connections that have accepted ``after``
        messages)."""
        self._drops.append(_Trap(_stage(stage), after))

    def stall_at(self, stage: str, seconds: float, *, after: int = 0) -> None:
        """Wait ``seconds`` before answering at ``stage`` (a client time-out test)."""
        self._stalls.append(_Trap(_stage(stage), after, seconds))

    def calm(self) -> None:
        """Forget every ``drop_at`` and ``stall_at``: from the next command on, answer at once."""
        self._drops.clear()
        self._stalls.clear()

    def reject_all(self, reply: str = "550 5.1.1 No such user") -> None:
        self.rcpt = lambda address: reply

    # -- the record --------------------------------------------------------------------------

    def reset_record(self) -> None:
        with self._lock:
            self.messages.clear()
            self.commands.clear()
            self.connections = 0

    def verbs(self) -> list[str]:
        """The commands' verbs in order: ``["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]``."""
        return [command.split(" ", 1)[0] for command in list(self.commands)]

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every client has gone (fails the test otherwise)."""
        deadline = time.monotonic() + timeout
        while self.open_connections:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.open_connections} connection(s) to the sink still open")
            time.sleep(0.01)

    # -- inside ----------------------------------------------------------------------------

    def _behaviour(self, callback: Callable[[Any], Reply], argument: Any) -> Reply:
        try:
            return callback(argument)
        except Exception as error:  # a failed assert in a callback must fail the test
            with self._lock:
                self.errors.append(error)
            raise

    def _record(self, command: str) -> None:
        with self._lock:
            self.commands.append(command)

    def _trap(self, traps: list[_Trap], stage: str, accepted: int) -> _Trap | None:
        return next((t for t in traps if t.stage == stage and accepted >= t.after), None)

    def _write_certificate(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.hostname)])
        now = datetime.datetime.now(datetime.UTC)
        dns_names = list(dict.fromkeys([self.hostname, "localhost", *self.names]))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(name) for name in dns_names]
                    + [x509.IPAddress(ipaddress.ip_address(self.host))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        self._tls_context = context


def _stage(stage: str) -> str:
    name = stage.upper()
    if name not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
    return name


class _Handler:
    """aiosmtpd's handler hooks: the replies the sink's behaviour asks for."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SinkSMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.sink._behaviour(self.sink.mail, address)
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 2.1.0 Sender OK"
        return reply

    async def handle_RCPT(
        self, server: SinkSMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.sink._behaviour(self.sink.rcpt, address)
        if reply is None:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 Recipient OK"
        return reply

    async def handle_DATA(self, server: SinkSMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        if await server.trap("END-OF-DATA"):
            return ""  # not reached: the connection is gone
        auth = session.auth_data
        message = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            helo=str(session.host_name),
            mail_options=list(envelope.mail_options),
            tls=session.ssl is not None,
            auth_user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
        )
        reply = sink._behaviour(sink.data, message)
        if reply is None or reply.startswith("2"):
            with sink._lock:
                sink.messages.append(message)
            server.accepted += 1
            if await server.trap("ACCEPTED"):
                return ""  # not reached: the connection is gone
        return reply or "250 2.0.0 Queued"


class SinkSMTP(SMTP):
    """aiosmtpd's SMTP with the sink's traps, its command record and 421-then-hang-up."""

    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        self.sink = sink
        self.accepted = 0  # messages accepted in this connection
        super().__init__(_Handler(sink), **kwargs)

    async def trap(self, stage: str) -> bool:
        """Stall and/or drop at this stage; True when the connection was dropped."""
        stall = self.sink._trap(self.sink._stalls, stage, self.accepted)
        if stall is not None:
            await asyncio.sleep(stall.seconds)
        if self.sink._trap(self.sink._drops, stage, self.accepted) is None:
            return False
        with self.sink._lock:
            self.sink.drops += 1
        if self.transport is not None:
            self.transport.close()
        await asyncio.get_running_loop().create_future()  # cancelled when the loss is seen
        return True

    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status.decode() if isinstance(status, bytes) else status
        if text.startswith("421") and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        sink = self.sink
        with sink._lock:
            sink.connections += 1
            sink.open_connections += 1
            sink.most_open = max(sink.most_open, sink.open_connections)
        try:
            if await self.trap("GREETING"):
                return
            if sink.greeting is not None:
                await self.push(sink.greeting)
                if self.transport is not None:
                    self.transport.close()
                return
            await super()._handle_client()
        finally:
            # Cancelled (the client left) or done: either way the socket goes, now.
            if self.transport is not None:
                self.transport.close()
            with sink._lock:
                sink.open_connections -= 1

    async def smtp_EHLO(self, hostname: str) -> None:
        self.sink._record(f"EHLO {hostname}")
        if await self.trap("EHLO"):
            return
        if not self.sink.esmtp:
            await self.push('500 Error: command "EHLO" not recognized')
            return
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self.sink._record(f"HELO {hostname}")
        if not await self.trap("EHLO"):
            await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        self.sink._record("STARTTLS")
        if not await self.trap("STARTTLS"):
            await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        self.sink._record(f"AUTH {(arg or '').split(' ')[0]}")  # never the credentials
        if not await self.trap("AUTH"):
            await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.sink._record(f"MAIL {arg or ''}".strip())
        if not await self.trap("MAIL"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.sink._record(f"RCPT {arg or ''}".strip())
        if not await self.trap("RCPT"):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        self.sink._record("DATA")
        if not await self.trap("DATA"):
            await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self.sink._record("RSET")
        if not await self.trap("RSET"):
            await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self.sink._record("QUIT")
        await super().smtp_QUIT(arg)


class _Controller(Controller):
    """aiosmtpd's threaded controller on the sink's already bound socket."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        # The handler given here is unused: factory() builds one per connection.
        super().__init__(_Handler(sink), hostname=sink.host, port=sink.port)

    def factory(self) -> SMTP:
        sink = self.sink
        authenticator = None
        if sink.auth is not None:
            expected = (sink.auth[0].encode(), sink.auth[1].encode())

            def authenticator(
                server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
            ) -> AuthResult:
                if isinstance(data, LoginPassword) and (data.login, data.password) == expected:
                    return AuthResult(success=True, auth_data=data)
                return AuthResult(success=False, handled=False, message=sink.auth_failure)

        with warnings.catch_warnings():
            # "AUTH without TLS": on purpose here, a test of the client's AUTH in the clear.
            warnings.simplefilter("ignore")
            return SinkSMTP(
                sink,
                hostname=sink.hostname,
                ident="smtpadmin test sink",
                tls_context=sink._tls_context if sink.tls else None,
                auth_required=sink.auth is not None,
                auth_require_tls=False,
                auth_exclude_mechanism=sink.auth_exclude,
                authenticator=authenticator,
                data_size_limit=sink.size_limit,
                enable_SMTPUTF8=sink.smtputf8,
                timeout=sink.timeout,
                loop=self.loop,
            )

    def _create_server(self) -> Any:
        assert self.sink._socket is not None
        return self.loop.create_server(self._factory_invoker, sock=self.sink._socket)


SinkFactory = Callable[..., Sink]


@pytest.fixture
def sink() -> Iterator[SinkFactory]:
    """``sink(**options)`` starts a loopback SMTP server (see ``Sink``); all stop afterwards."""
    started: list[Sink] = []

    def start(**options: Any) -> Sink:
        server = Sink(**options).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
    errors = [error for server in started for error in server.errors]
    if errors:
        raise errors[0]
