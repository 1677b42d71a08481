"""Facts about the host this process runs on, as the seed and the relay worker record them."""

from __future__ import annotations

import socket
from importlib import metadata

from django.core.exceptions import ValidationError

from smtpadmin.validators import normalize_domain


def host_fqdn() -> str:
    """This host's fully-qualified name, normalised; "localhost" when it is not a domain name
    (a bare IP address, or a resolver answer with odd characters)."""
    try:
        return normalize_domain(socket.getfqdn())
    except ValidationError:
        return "localhost"


def host_address() -> str:
    """The address this host's name resolves to, or "" when it does not resolve."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return ""


def software_version() -> str:
    try:
        return metadata.version("smtpadmin")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"
