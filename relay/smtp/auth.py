"""SMTP AUTH (PLAIN / LOGIN) against the SMTP credentials, with lockout.

Synchronous (ORM and password hashing): the protocol layer runs ``check_credentials`` in a
thread and waits ``AuthOutcome.delay`` before answering a failure.

Failures count per user name and per client address, with the console login's throttle
(``smtpadmin.throttle``: 5 failures within 15 minutes lock for 15 minutes) under keys of their
own (``smtp-user:``, ``smtp-addr:``). Names that exist and names that do not are counted,
locked, answered and timed alike, so a client cannot tell which user names exist. A
credential's runtime fields (``failed_logins``, ``locked_until``, ``last_used_at``) show the
count and the lock in the console; they are written with ``update()``, never ``save()``, so a
configuration save and the relay never overwrite each other.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from django.contrib.auth.hashers import check_password, get_hasher, make_password
from django.utils import timezone

from relay.smtp.policy import normal_client_ip
from servers.models import SmtpCredential
from smtpadmin import throttle
from smtpadmin.models import LoginThrottle

SUCCESS = "235 2.7.0 Authentication successful"
INVALID = "535 5.7.8 Authentication credentials invalid"
LOCKED = "454 4.7.0 Temporarily locked after repeated failed logins; try again later"
SECONDS_PER_FAILURE = 1.0
MAX_DELAY = 5.0


@dataclass(frozen=True)
class AuthOutcome:
    ok: bool
    reply: str
    username: str = ""  # the credential's name on success
    delay: float = 0.0  # seconds to wait before sending ``reply`` (failures only)


def throttle_keys(username: str, client_ip: str) -> list[str]:
    """The name's key and the client's: an IPv6 client is counted by its /64, since one
    host usually has a whole /64 to pick addresses from."""
    return [
        f"smtp-user:{_printable(username).strip().lower()[:250]}",
        f"smtp-addr:{_client(client_ip)}",
    ]


def _client(client_ip: str) -> str:
    try:
        address = ipaddress.ip_address(normal_client_ip(client_ip))
    except ValueError:
        return _printable(client_ip)[:250]
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def check_credentials(
    username: str, password: str, *, virtual_server_id: int, client_ip: str
) -> AuthOutcome:
    """Is this user name and password good for this virtual server, from this client?

    Good: enabled, right password, and the virtual server among the credential's (none
    listed = all). Anything else is the same "535 5.7.8" answer. A locked name or address is
    answered "454 4.7.0" without checking the password at all.
    """
    keys = throttle_keys(username, client_ip)
    now = timezone.now()
    credential = _find(username)
    # A lock written on the credential itself counts too: the console shows it.
    if throttle.locked_for(keys) is not None or (
        credential is not None
        and credential.locked_until is not None
        and credential.locked_until > now
    ):
        return AuthOutcome(ok=False, reply=LOCKED, delay=MAX_DELAY)

    if credential is None:
        # The same work as for a real name, so the answer's timing tells nothing.
        check_password(_hashable(password), _dummy_hash(get_hasher("default").algorithm))
        allowed = False
    else:
        password_ok = credential.check_password(_hashable(password))
        allowed = (
            password_ok
            and credential.enabled
            and _serves(credential, virtual_server_id)
            and password == _hashable(password)
        )
    if allowed and credential is not None:
        throttle.clear(keys)
        SmtpCredential.objects.filter(pk=credential.pk).update(
            last_used_at=now, failed_logins=0, locked_until=None
        )
        return AuthOutcome(ok=True, reply=SUCCESS, username=credential.username)

    throttle.record_failure(keys)
    rows = {row.key: row for row in LoginThrottle.objects.filter(key__in=keys)}
    name_row = rows.get(keys[0])
    if credential is not None and name_row is not None:
        SmtpCredential.objects.filter(pk=credential.pk).update(
            failed_logins=name_row.failures, locked_until=name_row.locked_until
        )
    failures = max((row.failures for row in rows.values()), default=1)
    return AuthOutcome(
        ok=False, reply=INVALID, delay=min(failures * SECONDS_PER_FAILURE, MAX_DELAY)
    )


def _find(username: str) -> SmtpCredential | None:
    if not username or username != _printable(username):
        return None  # no stored name has control characters (SmtpCredential.clean)
    return SmtpCredential.objects.filter(username=username).first()


def _serves(credential: SmtpCredential, virtual_server_id: int) -> bool:
    allowed = list(credential.virtual_servers.values_list("pk", flat=True))
    return not allowed or virtual_server_id in allowed


def _printable(text: str) -> str:
    """Control characters and lone surrogates (undecodable bytes) replaced: such text is never
    a stored name, and PostgreSQL refuses NUL in a string."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text)


def _hashable(password: str) -> str:
    """Hashers encode to UTF-8; a lone surrogate (undecodable bytes from the client) cannot
    be, and cannot match a stored password either."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return password.encode("utf-8", "replace").decode("utf-8")
    return password


@functools.lru_cache(maxsize=4)
def _dummy_hash(algorithm: str) -> str:
    return make_password("smtpadmin: no such user", hasher=algorithm)
