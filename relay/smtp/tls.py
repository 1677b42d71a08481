"""Server-side TLS contexts for STARTTLS, made from the certificates stored in the database.

``ssl`` only loads certificate chains from files, so the PEM text is written to a private
temporary directory for the moment of loading and removed at once. Contexts are cached per
certificate and fingerprint: a replaced certificate gives a new context for new sessions."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path


def server_context(certificate_pem: str, private_key_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Mail clients rarely present certificates; asking for none avoids handshake surprises.
    context.verify_mode = ssl.CERT_NONE
    with tempfile.TemporaryDirectory(prefix="smtpadmin-tls-") as directory:
        certfile = Path(directory) / "chain.pem"
        keyfile = Path(directory) / "key.pem"
        for path, text in ((certfile, certificate_pem), (keyfile, private_key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
        context.load_cert_chain(certfile, keyfile)
    return context


class TlsContexts:
    """One SSLContext per (certificate id, fingerprint), built on first use."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[int, str], ssl.SSLContext] = {}

    def get(self, certificate_id: int, fingerprint: str, pem: tuple[str, str]) -> ssl.SSLContext:
        key = (certificate_id, fingerprint)
        context = self._contexts.get(key)
        if context is None:
            context = server_context(*pem)
            # Drop the contexts of replaced certificates of the same id.
            for old in [k for k in self._contexts if k[0] == certificate_id]:
                del self._contexts[old]
            self._contexts[key] = context
        return context
