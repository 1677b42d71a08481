"""A small authoritative DNS server on loopback for tests, so that the code under test resolves
for real with dnspython, and nothing leaves the machine.

    def test_it_finds_the_mx(dns_server: DnsServer) -> None:
        dns_server.add("example.org", "MX", "10 mx1.example.org", "20 mx2.example.org")
        dns_server.host("mx1.example.org", "192.0.2.25")      # A + PTR
        dns_server.add("null.example", "MX", "0 .")          # RFC 7505 null MX
        resolver = make_resolver([])  # the fixture points SMTPADMIN_DNS_SERVERS here
        ...
        assert dns_server.asked("example.org", "MX") == 1

It answers over UDP and TCP on the same free port of 127.0.0.1 (``.address``, ``.port``;
``.setting`` is the ``SMTPADMIN_DNS_SERVERS`` value for a subprocess's environment), from a
table of records a test can change at any time. Every name with records (or below which there
are records) exists; a known name without the asked type answers NOERROR with no records;
anything else is NXDOMAIN. Negative answers carry an SOA with TTL 0 and records default to
TTL 0, so that a caching resolver never serves what a test has since changed. ``delay()`` makes
a name slow (time-out tests), ``fail()`` makes it SERVFAIL (or REFUSED, ...), and ``queries``
is the log of what was asked.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.reversename
import dns.rrset
import pytest

ROOT_SOA = "ns.invalid. hostmaster.invalid. 1 3600 600 86400 0"


@dataclass(frozen=True)
class Query:
    """One question the server received."""

    name: str  # lower-case, no trailing dot
    rdtype: str  # "A", "MX", ...
    transport: str  # "udp" or "tcp"


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text.rstrip(".") + "." if text not in ("", ".") else ".")


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class DnsServer:
    """See the module docstring. Use the ``dns_server`` fixture, or ``with DnsServer() as s:``."""

    def __init__(self, host: str = "127.0.0.1", default_ttl: int = 0) -> None:
        self.address = host
        self.port = 0
        self.default_ttl = default_ttl
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, list[Any]]] = {}
        self._delays: dict[dns.name.Name, float] = {}
        self._failures: dict[dns.name.Name, dns.rcode.Rcode] = {}
        self._queries: list[Query] = []
        self.errors: list[BaseException] = []  # what ``respond`` raised (the fixture fails on it)
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    # -- running -------------------------------------------------------------------------

    @property
    def setting(self) -> str:
        """The server as an ``SMTPADMIN_DNS_SERVERS`` entry: ``127.0.0.1:53535``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def start(self) -> DnsServer:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        handler_server = self

        class Udp(socketserver.ThreadingUDPServer):
            address_family = family
            daemon_threads = True
            block_on_close = False
            dns = handler_server

        class Tcp(socketserver.ThreadingTCPServer):
            address_family = family
            daemon_threads = True
            block_on_close = False
            dns = handler_server

        # TCP first on a free port, then UDP on the same number (it may be taken: try again).
        for _ in range(50):
            tcp = Tcp((self.address, 0), _TcpHandler)
            port = tcp.server_address[1]
            try:
                udp = Udp((self.address, port), _UdpHandler)
            except OSError:
                tcp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        self.port = port
        self._servers = [udp, tcp]
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"test-dns-{type(server).__name__.lower()}-{port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the records ---------------------------------------------------------------------

    def add(self, name: str, rdtype: str, *values: str, ttl: int | None = None) -> None:
        """Add records: ``add("example.org", "MX", "10 mx.example.org")``, ``add(name, "A",
        "192.0.2.1", "192.0.2.2")``, ``add(name, "TXT", "v=spf1 -all")`` (plain text, split
        into 255-byte strings as needed), ``add(name, "MX", "0 .")`` (null MX). Names in
        values are absolute whether or not they end in a dot."""
        owner, kind = _name(name), dns.rdatatype.from_text(rdtype.upper())
        rdatas = [self._rdata(kind, value) for value in values]
        with self._lock:
            existing = self._records.setdefault(owner, {}).setdefault(kind, [])
            existing.extend((rdata, self.default_ttl if ttl is None else ttl) for rdata in rdatas)

    def set(self, name: str, rdtype: str, *values: str, ttl: int | None = None) -> None:
        """Replace the records of that name and type (no values: remove them)."""
        self.remove(name, rdtype)
        if values:
            self.add(name, rdtype, *values, ttl=ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove the records of one type, or the whole name (it becomes NXDOMAIN)."""
        owner = _name(name)
        with self._lock:
            if rdtype is None:
                self._records.pop(owner, None)
                return
            types = self._records.get(owner, {})
            types.pop(dns.rdatatype.from_text(rdtype.upper()), None)
            if not types:
                self._records.pop(owner, None)

    def ptr(self, ip: str, name: str) -> None:
        """A PTR record for the address: ``ptr("192.0.2.1", "mail.example.org")``."""
        self.add(dns.reversename.from_address(ip).to_text(), "PTR", name)

    def host(self, name: str, *addresses: str, reverse: bool = True) -> None:
        """A / AAAA records for the name and, unless ``reverse=False``, a PTR back to it."""
        for address in addresses:
            self.add(name, "AAAA" if ":" in address else "A", address)
            if reverse:
                self.ptr(address, name)

    def delay(self, name: str, seconds: float) -> None:
        """Answer questions about this name only after ``seconds`` (0 = at once again)."""
        with self._lock:
            if seconds > 0:
                self._delays[_name(name)] = seconds
            else:
                self._delays.pop(_name(name), None)

    def fail(self, name: str, rcode: str | None = "SERVFAIL") -> None:
        """Answer every question about this name with that rcode (None = answer normally)."""
        with self._lock:
            if rcode is None:
                self._failures.pop(_name(name), None)
            else:
                self._failures[_name(name)] = dns.rcode.from_text(rcode)

    def reset(self) -> None:
        """Forget every record, delay, failure and logged query."""
        with self._lock:
            self._records.clear()
            self._delays.clear()
            self._failures.clear()
            self._queries.clear()

    # -- the log -------------------------------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries)

    def asked(self, name: str, rdtype: str | None = None) -> int:
        """How many questions about this name (and type) arrived."""
        wanted = _text(_name(name))
        return sum(
            1
            for query in self.queries
            if query.name == wanted and (rdtype is None or query.rdtype == rdtype.upper())
        )

    def clear_log(self) -> None:
        with self._lock:
            self._queries.clear()

    # -- answering -----------------------------------------------------------------------

    def _rdata(self, kind: dns.rdatatype.RdataType, value: str) -> Any:
        if kind == dns.rdatatype.TXT and not value.startswith('"'):
            raw = value.encode()
            chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, kind, chunks)
        return dns.rdata.from_text(
            dns.rdataclass.IN, kind, value, origin=dns.name.root, relativize=False
        )

    def _exists(self, name: dns.name.Name) -> bool:
        # A name exists if it has records or names below it do (an "empty non-terminal").
        return any(owner.is_subdomain(name) for owner in self._records)

    def respond(self, wire: bytes, transport: str) -> bytes | None:
        """The answer to one query in wire format (None: ignore the datagram)."""
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self._queries.append(
                Query(_text(question.name), dns.rdatatype.to_text(question.rdtype), transport)
            )
            delay = self._delays.get(question.name, 0.0)
        if delay:
            time.sleep(delay)
        try:
            with self._lock:
                self._fill(response, question.name, question.rdtype)
            response.to_wire()
        except Exception as error:  # a bug in this server: answer, and fail the test later
            traceback.print_exc()
            with self._lock:
                self.errors.append(error)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
        if transport == "udp":
            limit = max(query.payload, 512) if query.edns >= 0 else 512
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                # Too big for a datagram: say so, and the client asks again over TCP.
                response.answer, response.authority = [], []
                response.flags |= dns.flags.TC
        return response.to_wire()

    def _fill(
        self, response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        if qname in self._failures:
            response.set_rcode(self._failures[qname])
            return
        name = qname
        for _ in range(8):  # follow CNAMEs within the table, as an authoritative server does
            types = self._records.get(name, {})
            if rdtype in types:
                response.answer.append(self._rrset(name, rdtype, types[rdtype]))
                return
            cname = types.get(dns.rdatatype.CNAME)
            if cname and rdtype != dns.rdatatype.CNAME:
                response.answer.append(self._rrset(name, dns.rdatatype.CNAME, cname))
                name = cname[0][0].target
                continue
            break
        if not self._exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = dns.rrset.from_text(dns.name.root, 0, "IN", "SOA", ROOT_SOA)
        response.authority.append(soa)

    @staticmethod
    def _rrset(
        name: dns.name.Name, rdtype: dns.rdatatype.RdataType, records: list[Any]
    ) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for rdata, ttl in records:
            rrset.add(rdata, ttl)
        return rrset


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.respond(data, "udp")  # type: ignore[attr-defined]
        if reply is not None:
            with contextlib.suppress(OSError):  # stopped while a delayed answer waited
                sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.StreamRequestHandler):
    timeout = 10  # an idle connection must not keep a thread forever

    def handle(self) -> None:
        server: DnsServer = self.server.dns  # type: ignore[attr-defined]
        while True:  # several queries may share one connection
            try:
                header = self.rfile.read(2)
                if len(header) < 2:
                    return
                wire = self.rfile.read(int.from_bytes(header, "big"))
            except OSError:
                return
            reply = server.respond(wire, "tcp")
            if reply is None:
                return
            try:
                self.wfile.write(len(reply).to_bytes(2, "big") + reply)
            except OSError:
                return


@pytest.fixture
def dns_server(settings: Any) -> Iterator[DnsServer]:
    """A running test DNS server, and ``settings.SMTPADMIN_DNS_SERVERS`` pointing at it, so
    that ``relay.dns.make_resolver()`` (without a virtual server's own servers) asks it."""
    server = DnsServer().start()
    settings.SMTPADMIN_DNS_SERVERS = [server.setting]
    try:
        yield server
    finally:
        server.stop()
    if server.errors:
        raise server.errors[0]
