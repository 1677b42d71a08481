"""Current Sessions: the live SMTP sessions of each virtual server, as the relay worker reports
them every second, and the Terminate / Terminate All requests the worker carries out.

The rows are runtime data: the relay writes them in bulk and they are never audited as
configuration. Asking to terminate a session is an administrator's action and is audited on
the virtual server.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from servers.models.virtual_server import VirtualServer

# What the relay may update on a row it reported before. A session never moves to another
# virtual server, so virtual_server_id is set once, on insert.
LIVE_FIELDS = (
    "client_address",
    "client_port",
    "client_name",
    "helo",
    "auth_user",
    "tls",
    "connected_at",
    "messages",
)
MAX_AUDITED_CLIENTS = 20


@dataclass(frozen=True)
class SessionFacts:
    """One live session as the relay sees it (the termination fields are the console's)."""

    virtual_server_id: int
    key: str  # unique across workers: "<server>/<pid>/<counter>"
    client_address: str
    client_port: int
    connected_at: datetime.datetime
    client_name: str = ""  # forward-confirmed reverse DNS name; "" = unknown
    helo: str = ""
    auth_user: str = ""
    tls: bool = False
    messages: int = 0


class SmtpSession(models.Model):
    """A live SMTP session, written by the relay worker (runtime rows, never configuration)."""

    virtual_server = models.ForeignKey(
        VirtualServer, on_delete=models.CASCADE, related_name="sessions"
    )
    key = models.CharField(max_length=100, unique=True)
    client_address = models.CharField(max_length=64)
    client_port = models.PositiveIntegerField(default=0)
    client_name = models.CharField(max_length=255, blank=True)
    helo = models.CharField("HELO / EHLO name", max_length=255, blank=True)
    auth_user = models.CharField("authenticated user", max_length=255, blank=True)
    tls = models.BooleanField("TLS", default=False)
    connected_at = models.DateTimeField()
    messages = models.PositiveIntegerField(default=0)
    terminate_requested_at = models.DateTimeField(null=True, blank=True)
    terminate_requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["connected_at", "id"]
        verbose_name = "SMTP session"

    def __str__(self) -> str:
        return self.client

    @property
    def client(self) -> str:
        """The connected client as an administrator reads it: address, port and name."""
        address = self.client_address
        port = self.client_port
        endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"{endpoint} ({self.client_name})" if self.client_name else endpoint

    @property
    def terminating(self) -> bool:
        return self.terminate_requested_at is not None

    def audit_text(self) -> str:
        return f"{self.client} as {self.auth_user}" if self.auth_user else self.client

    def request_termination(self, by: Any = None) -> bool:
        """Ask the relay to end this session (it does within seconds). Audited on the virtual
        server. False when it was already asked for, or the session has ended meanwhile."""
        from smtpadmin.audit import record_action

        now = timezone.now()
        with transaction.atomic():
            # A conditional update: a second click, or another administrator, changes nothing.
            marked = SmtpSession.objects.filter(
                pk=self.pk, terminate_requested_at__isnull=True
            ).update(terminate_requested_at=now, terminate_requested_by=_username(by))
            if marked:
                record_action(by, self.virtual_server, "session", self.audit_text(), "terminate")
        if marked:
            self.terminate_requested_at = now
            self.terminate_requested_by = _username(by)
        return bool(marked)

    @classmethod
    def request_termination_all(cls, virtual_server: VirtualServer, by: Any = None) -> int:
        """Terminate All: ask the relay to end every session of the virtual server that is not
        already ending. Audited once, naming the clients. Returns how many were asked for."""
        from smtpadmin.audit import record_action

        now = timezone.now()
        with transaction.atomic():
            pending = cls.objects.filter(
                virtual_server=virtual_server, terminate_requested_at__isnull=True
            )
            sessions = list(pending)
            # Sessions that ended since the read are simply not marked.
            marked = cls.objects.filter(
                pk__in=[s.pk for s in sessions], terminate_requested_at__isnull=True
            ).update(terminate_requested_at=now, terminate_requested_by=_username(by))
            if marked:
                clients = [s.audit_text() for s in sessions[:MAX_AUDITED_CLIENTS]]
                if len(sessions) > MAX_AUDITED_CLIENTS:
                    clients.append(f"and {len(sessions) - MAX_AUDITED_CLIENTS} more")
                record_action(
                    by,
                    virtual_server,
                    "sessions",
                    f"{marked} session{'' if marked == 1 else 's'}: {', '.join(clients)}",
                    "terminate all",
                )
        return marked


def _username(user: Any) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return "system"


# PostgreSQL refuses NUL in text and UTF-8 cannot carry lone surrogates; a client's HELO is
# whatever it sent, and one unstorable value must not stop the whole report every second.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(value: str, limit: int) -> str:
    return _UNSTORABLE.sub("\ufffd", str(value))[:limit]


def _stored(facts: SessionFacts) -> dict[str, Any]:
    """The column values for one reported session, made storable."""
    return {
        "virtual_server_id": facts.virtual_server_id,
        "client_address": _clean(facts.client_address, 64),
        "client_port": max(0, int(facts.client_port or 0)),
        "client_name": _clean(facts.client_name, 255),
        "helo": _clean(facts.helo, 255),
        "auth_user": _clean(facts.auth_user, 255),
        "tls": bool(facts.tls),
        "connected_at": facts.connected_at,
        "messages": max(0, int(facts.messages)),
    }


def sync_live_sessions(
    server_id: int, live: Sequence[SessionFacts], *, scope: str = ""
) -> set[str]:
    """Make the stored sessions of this server's virtual servers match what its relay worker
    reports: insert the new ones, update those whose facts changed, delete those that are gone.
    Returns the keys of live sessions an administrator asked to terminate.

    ``scope`` is the key prefix of the reporting process (``"<server>/<pid>/"``): only its
    rows are compared and deleted, so the intake processes of one server do not delete each
    other's sessions. Empty: every session of the server is the reporter's.

    Called every second: when nothing changed it is a single SELECT; otherwise the writes are
    bulk statements whose number does not grow with the number of sessions. Rows of other
    servers are never touched, whatever ``live`` says.
    """
    wanted = {facts.key[:100]: _stored(facts) for facts in live}
    try:
        return _sync(server_id, wanted, scope)
    except IntegrityError:
        # A virtual server was deleted between our check and the insert (its sessions go with
        # it): read again and retry once.
        return _sync(server_id, wanted, scope)


def _sync(server_id: int, wanted: dict[str, dict[str, Any]], scope: str) -> set[str]:
    rows = SmtpSession.objects.filter(virtual_server__server_id=server_id)
    if scope:
        rows = rows.filter(key__startswith=scope)
    stored = {
        row.key: row
        for row in rows.only("key", "virtual_server_id", "terminate_requested_at", *LIVE_FIELDS)
    }
    gone = [row.pk for key, row in stored.items() if key not in wanted]
    changed = []
    for key, row in stored.items():
        values = wanted.get(key)
        if values is not None and any(getattr(row, f) != values[f] for f in LIVE_FIELDS):
            for field in LIVE_FIELDS:
                setattr(row, field, values[field])
            changed.append(row)
    new = [key for key in wanted if key not in stored]
    if gone or changed or new:
        with transaction.atomic():
            if new:
                _insert(server_id, {key: wanted[key] for key in new})
            if changed:
                SmtpSession.objects.bulk_update(changed, LIVE_FIELDS)
            if gone:
                SmtpSession.objects.filter(pk__in=gone).delete()
    return {key for key, row in stored.items() if key in wanted and row.terminating}


def _insert(server_id: int, new: dict[str, dict[str, Any]]) -> None:
    # Only sessions of this server's existing virtual servers: a listener may report once more
    # for a virtual server that was just deleted.
    ours = set(
        VirtualServer.objects.filter(
            server_id=server_id, pk__in={values["virtual_server_id"] for values in new.values()}
        ).values_list("pk", flat=True)
    )
    SmtpSession.objects.bulk_create(
        [
            SmtpSession(key=key, **values)
            for key, values in new.items()
            if values["virtual_server_id"] in ours
        ],
        # A key another server's row already holds is not ours to take over.
        ignore_conflicts=True,
    )
