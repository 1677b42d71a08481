"""Local delivery: recipients in authoritative domains into Maildirs under the server's drop
directory (``<drop>/<domain>/<local part>/``), readable by any Maildir tool.

Maildir per https://cr.yp.to/proto/maildir.html: the file is written and fsynced in ``tmp/``
under a name no other delivery can use, then linked into ``new/`` (an atomic step: a reader
sees the whole message or nothing), and the directory entry is fsynced before we record the
delivery. A crash between the file and the database row delivers the message once more on the
next sweep; nothing is lost.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from relay.delivery.claims import lease_seconds
from relay.queue.models import (
    LinkQueue,
    Message,
    QueueEntry,
    Recipient,
    TrackingEvent,
    retry_delay,
)
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import Mailbox

DEFAULT_RETRY_MINUTES = (10, 10, 10, 15)
DELIVERED_REPLY = "250 2.0.0 Delivered to Maildir"
UNKNOWN_REPLY = "550 5.1.1 <{address}>: mailbox unavailable (unknown or disabled)"
FAILED_REPLY = "451 4.3.0 Local delivery failed: {error}"


# --- Maildir, pure file work -------------------------------------------------------------


def path_component(text: str) -> str:
    """A domain or local part as one directory name: no '/', '\\' or NUL (or other control
    character), no '..', not hidden."""
    cleaned = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    cleaned = cleaned.replace("..", "__")
    if not cleaned or cleaned.startswith("."):
        cleaned = "_" + cleaned
    return cleaned


def maildir_path(drop_directory: str | Path, address: str) -> Path:
    local, _, domain = address.rpartition("@")
    return Path(drop_directory) / path_component(domain.lower()) / path_component(local)


_counter = 0


def unique_name(now: float | None = None) -> str:
    """``time.MusecPpidRrandom.host``: the modern cr.yp.to form (seconds, then microseconds,
    process id and random bits so two deliveries in one process and microsecond still differ,
    then the host name with '/' and ':' escaped as the spec says)."""
    global _counter
    _counter += 1
    now = time.time() if now is None else now
    seconds = int(now)
    micro = int((now - seconds) * 1_000_000)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"
    random = f"{secrets.randbits(32):08x}{_counter:x}"
    return f"{seconds}.M{micro}P{os.getpid()}R{random}.{host}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_maildir(path: Path) -> None:
    created = False
    for sub in ("tmp", "new", "cur"):
        directory = path / sub
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = True
    if created:
        # The new directories themselves must survive a crash, not only the file in them.
        _fsync_directory(path)
        _fsync_directory(path.parent)


def write_maildir(path: Path, data: bytes) -> Path:
    """Deliver ``data`` into the Maildir at ``path`` (created when missing); the file in new/."""
    ensure_maildir(path)
    name = unique_name()
    temporary = path / "tmp" / name
    final = path / "new" / name
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, final)
        except OSError as exc:
            # Some file systems have no hard links; rename is atomic too (and the name is ours).
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            os.rename(temporary, final)
        else:
            os.unlink(temporary)
        _fsync_directory(path / "new")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final


def maildir_bytes(content: bytes, *, sender: str, recipient: str) -> bytes:
    """The file written for one recipient: Return-Path and Delivered-To first (as Postfix's
    and qmail's local delivery add them), then the message; LF line endings, the Maildir
    convention."""
    header = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
    return (header + content).replace(b"\r\n", b"\n")


# --- delivering a queue entry ------------------------------------------------------------


@dataclass
class _Outcome:
    delivered: list[Recipient] = field(default_factory=list)
    unknown: list[Recipient] = field(default_factory=list)
    deferred: list[Recipient] = field(default_factory=list)
    paths: dict[int, Path] = field(default_factory=dict)  # recipient pk -> file
    error: str = ""


def _deliver_files(message: Message, recipients: list[Recipient], drop: str) -> _Outcome:
    outcome = _Outcome()
    folded = {r.address.lower() for r in recipients}
    # Disabled or deleted since RCPT time: the recipient fails now (the DSN is issue 5's).
    known = set(
        Mailbox.objects.filter(address__in=folded, enabled=True).values_list("address", flat=True)
    )
    content = message.raw
    written: dict[str, Path] = {}  # one file per mailbox, however the address was spelled
    for recipient in recipients:
        address = recipient.address.lower()
        if address not in known:
            outcome.unknown.append(recipient)
            continue
        if address in written:
            outcome.delivered.append(recipient)
            outcome.paths[recipient.pk] = written[address]
            continue
        try:
            path = write_maildir(
                maildir_path(drop, address),
                maildir_bytes(content, sender=message.sender, recipient=address),
            )
        except OSError as exc:
            outcome.deferred.append(recipient)
            outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
            continue
        written[address] = path
        outcome.delivered.append(recipient)
        outcome.paths[recipient.pk] = path
    return outcome


def deliver_local(entry_id: int, worker: str) -> bool:
    """Deliver one due local queue entry; False when it was not ours to deliver (not due,
    frozen, not local, or another worker got there first). A file-system failure leaves the
    entry in Retry with the next attempt scheduled by the virtual server's retry intervals."""
    # The configured lease: a relay killed mid-delivery holds its entries no longer than that.
    if not QueueEntry.claim(entry_id, worker, seconds=lease_seconds()):
        return False
    entry = QueueEntry.objects.select_related("queue__server", "message", "virtual_server").get(
        pk=entry_id
    )
    queue = entry.queue
    if queue.kind != LinkQueue.Kind.LOCAL or queue.server is None or queue.frozen:
        entry.leased_to(worker).update(lease_owner="", lease_until=None)
        return False
    recipients = list(entry.recipients.filter(state__in=Recipient.OPEN_STATES).order_by("pk"))
    outcome = _deliver_files(entry.message, recipients, queue.server.effective_drop_directory)
    _record(entry, worker, outcome, queue.server.name)
    return True


def _record(entry: QueueEntry, worker: str, outcome: _Outcome, server_name: str) -> None:
    now = timezone.now()
    for recipient in outcome.delivered:
        recipient.state = Recipient.State.DELIVERED
        recipient.status = "2.0.0"
        recipient.last_response = DELIVERED_REPLY
        recipient.completed_at = now
    for recipient in outcome.unknown:
        recipient.state = Recipient.State.FAILED
        recipient.status = "5.1.1"
        recipient.last_response = UNKNOWN_REPLY.format(address=recipient.address)
        recipient.completed_at = now
    failure = FAILED_REPLY.format(error=outcome.error)
    for recipient in outcome.deferred:
        recipient.state = Recipient.State.DEFERRED
        recipient.status = "4.3.0"
        recipient.last_response = failure
    changed = outcome.delivered + outcome.unknown + outcome.deferred
    with transaction.atomic():
        if changed:
            Recipient.objects.bulk_update(
                changed, ["state", "status", "last_response", "completed_at"]
            )
        # Only while our lease holds: if it ran out and another worker took the entry, the
        # recipients above are still true (the files exist), but the entry is the other's.
        entry.leased_to(worker).update(**_entry_outcome(entry, outcome, failure, now))
        tracking = TrackingSettings.load()
        if tracking.enabled and changed:
            TrackingEvent.objects.bulk_create(_events(entry, outcome, failure, server_name, now))
        if outcome.unknown:
            # A mailbox gone since RCPT: the sender hears of it (never for a null sender:
            # submit_dsn sends that to badmail instead). Imported here: DSNs deliver locally.
            from relay.delivery.dsn import FAILURE, submit_dsn

            submit_dsn(entry.message_id, [r.pk for r in outcome.unknown], FAILURE, now=now)


def _entry_outcome(
    entry: QueueEntry, outcome: _Outcome, failure: str, now: datetime
) -> dict[str, object]:
    fields: dict[str, object] = {
        "attempts": entry.attempts + 1,
        "last_attempt_at": now,
        "lease_owner": "",
        "lease_until": None,
    }
    if outcome.deferred:
        vs = entry.virtual_server
        minutes = (
            (
                vs.retry_first_minutes,
                vs.retry_second_minutes,
                vs.retry_third_minutes,
                vs.retry_subsequent_minutes,
            )
            if vs is not None
            else DEFAULT_RETRY_MINUTES
        )
        fields.update(
            state=QueueEntry.State.RETRY,
            next_attempt_at=now + retry_delay(entry.attempts + 1, minutes),
            last_response=failure,
        )
    else:
        fields.update(
            state=QueueEntry.State.DONE,
            completed_at=now,
            last_response=DELIVERED_REPLY if outcome.delivered else "550 5.1.1 No such mailbox",
        )
    return fields


def _events(
    entry: QueueEntry, outcome: _Outcome, failure: str, server_name: str, now: datetime
) -> list[TrackingEvent]:
    message = entry.message
    queue_name = entry.queue.name
    events = [
        message_event(
            message,
            TrackingEvent.Kind.DELIVERED,
            recipient=r.address,
            next_hop="local delivery",
            response=DELIVERED_REPLY,
            detail=str(outcome.paths[r.pk]),
            at=now,
            server_name=server_name,
            queue_name=queue_name,
        )
        for r in outcome.delivered
    ]
    events += [
        message_event(
            message,
            TrackingEvent.Kind.FAILED,
            recipient=r.address,
            next_hop="local delivery",
            response=r.last_response,
            at=now,
            server_name=server_name,
            queue_name=queue_name,
        )
        for r in outcome.unknown
    ]
    events += [
        message_event(
            message,
            TrackingEvent.Kind.DEFERRED,
            recipient=r.address,
            next_hop="local delivery",
            response=failure,
            at=now,
            server_name=server_name,
            queue_name=queue_name,
        )
        for r in outcome.deferred
    ]
    return events


def deliver_due_local(server_id: int, worker: str, limit: int = 100) -> int:
    """Deliver up to ``limit`` due local entries of this server's queues: the supervisor's
    sweep, and recovery of entries whose worker died (their leases expire). Returns how many
    it delivered (or retried)."""
    candidates = list(
        QueueEntry.objects.due()
        .filter(queue__kind=LinkQueue.Kind.LOCAL, queue__server_id=server_id, queue__frozen=False)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    # Each claim is its own conditional UPDATE: a candidate another worker took meanwhile
    # is skipped, not delivered twice.
    return sum(1 for pk in candidates if deliver_local(pk, worker))
