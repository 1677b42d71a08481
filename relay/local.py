"""Local delivery: recipients in authoritative domains into Maildirs under the server's drop
directory (``<drop>/<domain>/<local part>/``), readable by any Maildir tool.

Maildir per https://cr.yp.to/proto/maildir.html: the file is written and fsynced in ``tmp/``,
then linked into ``new/`` (an atomic step: a reader sees the whole message or nothing), and the
directory entry is fsynced before we record the delivery. The file's name comes from the queue
entry and the mailbox, the same on every attempt: when the relay dies between the file and the
database row, the next attempt finds the file (in ``new/``, or in ``cur/`` where a reader moved
it) and records it instead of writing a second copy. Nothing is lost.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from relay.queue.models import (
    LinkQueue,
    QueueEntry,
    Recipient,
    TrackingEvent,
    retry_delay,
)
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import Mailbox
from smtpadmin.private import FILE_MODE, private_directory

DEFAULT_LEASE_SECONDS = 60
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


def lease_seconds() -> float:
    """``SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS``: how long a local delivery holds its entry,
    and so how long its mail waits when the relay dies. Not Celery's lease: that one must
    outlast a whole SMTP batch on the network, while a Maildir delivery takes milliseconds
    and, being idempotent, costs only a redundant look when a lease runs out too soon."""
    return float(getattr(settings, "SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def maildir_name(received: datetime, queue_id: str, entry_id: int, mailbox: str, host: str) -> str:
    """The file name of one message for one mailbox through one queue entry, the same on every
    attempt. cr.yp.to's ``time.unique.host``: the time the message arrived; the queue id, the
    entry and a digest of the mailbox (two mailboxes may share a folder) as the unique part;
    the server's name as the host, which unlike a container's host name survives a restart."""
    seconds = int(received.timestamp())
    digest = hashlib.sha256(mailbox.lower().encode()).hexdigest()[:8]
    unique = f"M{received.microsecond}Q{path_component(queue_id)}E{entry_id}A{digest}"
    return f"{seconds}.{unique}.{_maildir_host(host)}"


def _maildir_host(host: str) -> str:
    return path_component(host).replace(":", r"\072")


def _same_delivery(file_name: str, name: str) -> bool:
    """``file_name`` is the file named ``name`` or a reader's rename of it: ``name:2,S`` in
    cur/ (Dovecot may add ``,S=size`` first; ';' and '!' are other systems' separators)."""
    return file_name == name or (file_name.startswith(name) and file_name[len(name)] in ":,;!")


def find_delivered(path: Path, name: str) -> Path | None:
    """The file ``name`` in the Maildir at ``path``, in new/ or (renamed by a reader) in cur/."""
    # new/ before cur/: a reader moves files from new/ to cur/, never back, so a file that
    # moves while we look is still found.
    final = path / "new" / name
    if os.path.lexists(final):
        return final
    try:
        with os.scandir(path / "cur") as entries:
            for entry in entries:
                if _same_delivery(entry.name, name):
                    return Path(entry.path)
    except FileNotFoundError:
        pass
    return None


def _discard_unfinished(tmp: Path, name: str) -> None:
    """Remove what attempts at ``name`` left in tmp/: a relay killed while writing leaves a
    partial file there, which must never reach new/."""
    with os.scandir(tmp) as entries:
        for entry in entries:
            if _same_delivery(entry.name, name):
                Path(entry.path).unlink(missing_ok=True)


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
            # 0700 down from the drop directory: mail is for its mailbox's reader alone.
            private_directory(directory)
            created = True
    if created:
        # The new directories themselves must survive a crash, not only the file in them.
        _fsync_directory(path)
        _fsync_directory(path.parent)


def write_maildir(path: Path, data: bytes, name: str | None = None, *, fresh: bool = False) -> Path:
    """Deliver ``data`` into the Maildir at ``path`` (created when missing) as ``name``
    (default: a new unique name); the file in new/, or the file an earlier attempt at ``name``
    delivered (in new/ or cur/), which is not written again. ``fresh``: no attempt at ``name``
    ever began before, so there is nothing to look for (cur/ may hold many thousand files)."""
    ensure_maildir(path)
    if name is None:
        name = temporary_name = unique_name()
    else:
        if not fresh:
            _discard_unfinished(path / "tmp", name)
            found = find_delivered(path, name)
            if found is not None:
                # The attempt that linked it may have died before its directory was on disk.
                _fsync_directory(found.parent)
                return found
        # Each attempt writes a tmp/ file of its own: one that took over from a stalled
        # attempt must not link that attempt's half-written file.
        temporary_name = f"{name},T{os.getpid()}x{secrets.token_hex(4)}"
    temporary = path / "tmp" / temporary_name
    final = path / "new" / name
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
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
        except FileExistsError:
            # Another attempt at this entry linked it first (its lease ran out under it):
            # that file is the delivery.
            os.unlink(temporary)
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


class Attempt(enum.Enum):
    FIRST = "first"  # no attempt at the entry began before: none of its files can exist
    AGAIN = "again"  # one did, and may have died after writing files but before recording


def claim(entry_id: int, worker: str) -> Attempt | None:
    """Take the lease on a due entry for ``lease_seconds()``, marking that an attempt began
    (``last_attempt_at``, which nothing clears); None when it is not due or another worker
    got there first (each UPDATE is conditional: of two workers, one changes the row)."""
    now = timezone.now()
    taken = {
        "lease_owner": worker,
        "lease_until": now + timedelta(seconds=lease_seconds()),
        "last_attempt_at": now,
    }
    due = QueueEntry.objects.due(now).filter(pk=entry_id)
    if due.filter(last_attempt_at__isnull=True).update(**taken):
        return Attempt.FIRST
    if due.update(**taken):
        return Attempt.AGAIN
    return None


@dataclass
class _Outcome:
    delivered: list[Recipient] = field(default_factory=list)
    unknown: list[Recipient] = field(default_factory=list)
    deferred: list[Recipient] = field(default_factory=list)
    paths: dict[int, Path] = field(default_factory=dict)  # recipient pk -> file
    error: str = ""


def _deliver_files(
    entry: QueueEntry, recipients: list[Recipient], drop: str, host: str, attempt: Attempt
) -> _Outcome:
    outcome = _Outcome()
    message = entry.message
    folded = {r.address.lower() for r in recipients}
    # Disabled or deleted since RCPT time: the recipient fails now and its sender gets a DSN.
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
                maildir_name(message.received_at, message.queue_id, entry.pk, address, host),
                fresh=attempt is Attempt.FIRST,
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
    local = QueueEntry.objects.filter(
        pk=entry_id, queue__kind=LinkQueue.Kind.LOCAL, queue__server__isnull=False
    )
    if not local.filter(queue__frozen=False).exists():
        return False
    attempt = claim(entry_id, worker)
    if attempt is None:
        return False
    entry = QueueEntry.objects.select_related("queue__server", "message", "virtual_server").get(
        pk=entry_id
    )
    queue = entry.queue
    if queue.frozen or queue.server is None:  # frozen since we looked
        entry.leased_to(worker).update(lease_owner="", lease_until=None)
        return False
    recipients = list(entry.recipients.filter(state__in=Recipient.OPEN_STATES).order_by("pk"))
    server = queue.server
    drop = server.effective_drop_directory
    outcome = _deliver_files(entry, recipients, drop, server.name, attempt)
    _record(entry, worker, outcome, server.name)
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
        # Only while our lease holds: if it ran out, the entry is another attempt's, which
        # finds the files we wrote (same names) and records them itself, once.
        if not entry.leased_to(worker).update(**_entry_outcome(entry, outcome, failure, now)):
            return
        if changed:
            Recipient.objects.bulk_update(
                changed, ["state", "status", "last_response", "completed_at"]
            )
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
