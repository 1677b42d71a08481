"""A small organization for end-to-end relay tests: one server with one virtual server on a
free loopback port, an authoritative domain with a mailbox, and an SMTP credential."""

from __future__ import annotations

import mailbox
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers.models import (
    AcceptedDomain,
    Certificate,
    Mailbox,
    Server,
    SmtpCredential,
    VirtualServer,
)
from tests.relay.harness import free_port, node, wait_for

PASSWORD = "s3cret-Passw0rd"


@dataclass
class World:
    server: Server
    vs: VirtualServer
    drop: Path
    credential: SmtpCredential

    @property
    def port(self) -> int:
        return self.vs.port

    def configure(self, **fields: Any) -> VirtualServer:
        """Change the virtual server like the console does (validated, saved)."""
        for name, value in fields.items():
            setattr(self.vs, name, value)
        self.vs.full_clean()
        self.vs.save()
        return self.vs

    def maildir(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.drop / domain / local

    def delivered(self, address: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """The messages in a mailbox's Maildir once ``count`` have arrived."""

        def arrived() -> list[Any]:
            path = self.maildir(address)
            if not (path / "new").is_dir():
                return []
            messages = list(mailbox.Maildir(path, create=False))
            return messages if len(messages) >= count else []

        return wait_for(arrived, timeout)


def add_mailbox(address: str) -> Mailbox:
    box = Mailbox(address=address)
    box.full_clean()
    box.save()
    return box


def make_world(tmp_path: Path) -> World:
    server = node()
    server.drop_directory = str(tmp_path / "maildrop")
    server.save()
    vs = VirtualServer(
        server=server,
        name="Inbound",
        ip_address="127.0.0.1",
        port=free_port(),
        fqdn="mx.relay.test",
    )
    vs.full_clean()
    vs.save()
    AcceptedDomain.objects.create(domain="smtpadmin.test", is_default=True)
    AcceptedDomain.objects.create(domain="partner.test", type=AcceptedDomain.Type.INTERNAL_RELAY)
    add_mailbox("alice@smtpadmin.test")
    add_mailbox("bob@smtpadmin.test")
    credential = SmtpCredential(username="relayuser")
    credential.set_password(PASSWORD)
    credential.save()
    return World(server=server, vs=vs, drop=tmp_path / "maildrop", credential=credential)


@pytest.fixture
def world(transactional_db: Any, tmp_path: Path) -> World:
    return make_world(tmp_path)


def certificate() -> Certificate:
    cert = Certificate.generate_self_signed("mx", "mx.relay.test")
    cert.save()
    return cert


def client_tls() -> ssl.SSLContext:
    """The client side of STARTTLS in tests: a self-signed certificate, no verification."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(subject: str = "Hello", body: str = "Hi there.\r\n", **headers: str) -> bytes:
    lines = ["From: sender@outside.test", "To: alice@smtpadmin.test", f"Subject: {subject}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
