"""SMTP AUTH (PLAIN / LOGIN) against the SMTP credentials, with lockout.

Synchronous (ORM and password hashing): the protocol layer runs ``first_look`` in a thread (a
remembered login from a clean pair ends there, in one statement), waits the back-off it
returns (without holding a database thread), then runs ``check_credentials`` in a thread and
waits ``AuthOutcome.delay`` before answering a failure.

The console login's rules (``smtpadmin.throttle``) under the SMTP scope: 5 failures within 15
minutes lock that user name from that client address for 15 minutes ("454 4.7.0"), checked and
counted atomically before the password is; each name slows down by up to 3 seconds once it has
failed 10 times from any addresses. Names that exist and names that do not are counted, locked,
answered and timed alike, so a client cannot tell which user names exist. A credential's
runtime fields (``failed_logins``: the name's failures within the window; ``locked_until``: its
latest lock from any address; ``last_used_at``) show this in the console; they are written with
``update()``, never ``save()``, so a configuration save and the relay never overwrite each
other.

A successful check is remembered for ``SMTPADMIN_AUTH_CACHE_SECONDS`` (``VerifiedCache``), as
Dovecot's auth cache does, so that a client authenticating on every connection does not cost a
password hash (PBKDF2: hundreds of milliseconds of CPU) each time. Only the hash is skipped: the
lockout, the credential's row (enabled, password, virtual servers) and the answers are the same.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password, get_hasher, make_password
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef
from django.utils import timezone

from relay.smtp.send_limits import SendLimit, send_limit_of
from servers.models import SmtpCredential
from smtpadmin import throttle

SUCCESS = "235 2.7.0 Authentication successful"
INVALID = "535 5.7.8 Authentication credentials invalid"
LOCKED = "454 4.7.0 Temporarily locked after repeated failed logins; try again later"
SECONDS_PER_FAILURE = 1.0
MAX_DELAY = 5.0
SMTP = throttle.Scope.SMTP


@dataclass(frozen=True)
class AuthOutcome:
    ok: bool
    reply: str
    username: str = ""  # the credential's name on success
    delay: float = 0.0  # seconds to wait before sending ``reply`` (failures only)
    send_limit: SendLimit | None = None  # the credential's messages per hour, when it has one


@dataclass(frozen=True)
class _Verified:
    credential_id: int
    password_hash: str  # the credential's when it was checked: a new password no longer matches
    expires: float  # on the cache's clock


class VerifiedCache:
    """Name and password pairs that passed the password check recently, in this process only.

    Keyed by an HMAC of the pair under a key drawn when the process starts: neither the
    password nor a hash of it that could be attacked offline is kept. An entry counts only for
    the same credential with the same stored password hash, enabled, until it expires; anything
    else drops it. Failures are never remembered: every wrong password is hashed and counted.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, _Verified] = {}
        self._lock = threading.Lock()
        # digest -> (the lock of its check in progress, how many sessions want it)
        self._checking: dict[bytes, tuple[threading.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, username: str, password: str) -> bytes:
        name = username.encode("utf-8", "surrogatepass")
        secret = password.encode("utf-8", "surrogatepass")
        message = len(name).to_bytes(4, "big") + name + secret
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verified(self, username: str, password: str, credential: SmtpCredential) -> bool:
        """Did this password pass for this credential, as it is now, recently?"""
        digest = self._digest(username, password)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False
            if (
                entry.credential_id == credential.pk
                and entry.password_hash == credential.password_hash
                and credential.enabled
                and self.clock() < entry.expires
            ):
                return True
            del self._entries[digest]
            return False

    def remember(
        self, username: str, password: str, credential: SmtpCredential, seconds: float
    ) -> None:
        digest = self._digest(username, password)
        entry = _Verified(credential.pk, credential.password_hash, self.clock() + seconds)
        with self._lock:
            self._entries.pop(digest, None)  # re-inserted last: the oldest go first when full
            if len(self._entries) >= self.MAX_ENTRIES:
                self._prune()
            self._entries[digest] = entry

    @contextlib.contextmanager
    def checking(self, username: str, password: str) -> Iterator[None]:
        """One password check of this pair at a time in this process: sessions that log in with
        it together wait for the first check and then find its success remembered, instead of
        each hashing the same password (a burst of first logins after a start or an expiry)."""
        digest = self._digest(username, password)
        with self._lock:
            lock, waiting = self._checking.get(digest, (threading.Lock(), 0))
            self._checking[digest] = (lock, waiting + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, waiting = self._checking[digest]
                if waiting > 1:
                    self._checking[digest] = (lock, waiting - 1)
                else:
                    del self._checking[digest]

    def forget(self, username: str, password: str) -> None:
        digest = self._digest(username, password)
        with self._lock:
            self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _prune(self) -> None:
        now = self.clock()
        for digest in [d for d, entry in self._entries.items() if entry.expires <= now]:
            del self._entries[digest]
        while len(self._entries) >= self.MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]


CACHE = VerifiedCache()


class LastUsed:
    """When a credential's "last used" time needs writing again after a successful login: a
    client that logs in on every connection would otherwise cost three statements per
    message for a time shown to the minute. Written at the first success in this process,
    then at most every ``EVERY`` seconds while its row shows a last use and no failures or
    lock (a row that does not is brought up to date at once)."""

    EVERY = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def due(self, credential: SmtpCredential) -> bool:
        """Whether to write now; counts as written when it says so."""
        now = self.clock()
        clean = (
            not credential.failed_logins
            and credential.locked_until is None
            and credential.last_used_at is not None
        )
        with self._lock:
            written = self._written.get(credential.pk)
            if clean and written is not None and now - written < self.EVERY:
                return False
            if len(self._written) >= VerifiedCache.MAX_ENTRIES:
                self._written.clear()
            self._written[credential.pk] = now
            return True


LAST_USED = LastUsed()


def cache_seconds() -> int:
    """How long a successful check is remembered (0: not at all)."""
    return max(int(getattr(settings, "SMTPADMIN_AUTH_CACHE_SECONDS", 0)), 0)


def backoff_delay(username: str) -> float:
    """Seconds to wait before checking a password for this name (the per-name back-off)."""
    return throttle.name_delay(SMTP, username)


@dataclass(frozen=True)
class FirstLook:
    """What ``first_look`` found: the answer already (``outcome``), or the back-off to wait
    (``pause`` seconds) before ``check_credentials`` decides."""

    outcome: AuthOutcome | None = None
    pause: float = 0.0


def first_look(
    username: str, password: str, *, virtual_server_id: int, client_ip: str
) -> FirstLook:
    """A login in one statement when it can be: the credential, whether it serves this
    virtual server and the name's and the pair's throttle standing, read together. A password
    remembered by ``CACHE`` for this credential as it is now, from a pair with no count or
    lock and a name with no back-off, succeeds here: what ``check_credentials`` would answer,
    and its writes would change nothing (a clean pair has no row to clear). Anything else
    (a first login, a wrong password, a pair with failures, a name being guessed) goes to
    ``check_credentials``, which counts the attempt before it checks the password."""
    seconds = cache_seconds()
    name = _printable(username)
    if seconds <= 0 or not username or username != name:
        return FirstLook(pause=backoff_delay(username))
    now = timezone.now()
    listed = SmtpCredential.virtual_servers.through.objects.filter(smtpcredential_id=OuterRef("pk"))
    credential = (
        SmtpCredential.objects.filter(username=username)
        .annotate(
            serves=ExpressionWrapper(
                ~Exists(listed) | Exists(listed.filter(virtualserver_id=virtual_server_id)),
                output_field=BooleanField(),
            ),
            **throttle.standing(SMTP, username, client_ip, now),
        )
        .first()
    )
    if credential is None:
        return FirstLook(pause=backoff_delay(username))
    name_failures = credential.throttle_name_failures or 0  # type: ignore[attr-defined]
    pause = throttle.backoff(name_failures)
    if (
        pause
        or credential.throttle_pair  # type: ignore[attr-defined]
        or not credential.serves
        or password != _hashable(password)
        or not CACHE.verified(username, password, credential)
    ):
        return FirstLook(pause=pause)
    if LAST_USED.due(credential):
        SmtpCredential.objects.filter(pk=credential.pk).update(
            last_used_at=now,
            failed_logins=name_failures,
            locked_until=credential.throttle_latest_lock,  # type: ignore[attr-defined]
        )
    return FirstLook(
        AuthOutcome(
            ok=True,
            reply=SUCCESS,
            username=credential.username,
            send_limit=send_limit_of(credential),
        )
    )


def check_credentials(
    username: str, password: str, *, virtual_server_id: int, client_ip: str
) -> AuthOutcome:
    """Is this user name and password good for this virtual server, from this client?

    Good: enabled, right password, and the virtual server among the credential's (none
    listed = all). Anything else is the same "535 5.7.8" answer. A locked pair of name and
    client address is answered "454 4.7.0" without checking the password at all.
    """
    client = client_ip  # counted by /64 for IPv6 (smtpadmin.throttle.client_key)
    if not throttle.reserve(SMTP, username, client):
        return AuthOutcome(ok=False, reply=LOCKED, delay=MAX_DELAY)

    credential = _find(username)
    seconds = cache_seconds()
    remembered = False
    if credential is None:
        # The same work as for a real name, so the answer's timing tells nothing.
        check_password(_hashable(password), _dummy_hash(get_hasher("default").algorithm))
        allowed = False
    else:
        with CACHE.checking(username, password) if seconds > 0 else contextlib.nullcontext():
            remembered = seconds > 0 and CACHE.verified(username, password, credential)
            password_ok = remembered or credential.check_password(_hashable(password))
            allowed = (
                password_ok
                and credential.enabled
                and _serves(credential, virtual_server_id)
                and password == _hashable(password)
            )
            if allowed and seconds > 0 and not remembered:
                CACHE.remember(username, password, credential, seconds)
    if allowed and credential is not None:
        throttle.succeeded(SMTP, username, client)
        if LAST_USED.due(credential):
            SmtpCredential.objects.filter(pk=credential.pk).update(
                last_used_at=timezone.now(),
                failed_logins=throttle.name_failures(SMTP, username),
                locked_until=throttle.latest_lock(SMTP, username),
            )
        return AuthOutcome(
            ok=True,
            reply=SUCCESS,
            username=credential.username,
            send_limit=send_limit_of(credential),
        )

    if credential is None:
        CACHE.forget(username, password)  # the credential was deleted
    failure = throttle.failed(SMTP, username, client)
    if credential is not None:
        SmtpCredential.objects.filter(pk=credential.pk).update(
            failed_logins=failure.name_failures, locked_until=throttle.latest_lock(SMTP, username)
        )
    return AuthOutcome(
        ok=False,
        reply=INVALID,
        delay=min(max(failure.pair_failures, 1) * SECONDS_PER_FAILURE, MAX_DELAY),
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
