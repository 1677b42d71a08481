"""Local delivery: recipients in authoritative domains into Maildirs under the server's drop
directory (``<drop>/<domain>/<local part>/``), readable by any Maildir tool.

Maildir per https://cr.yp.to/proto/maildir.html: the file is written and fsynced in ``tmp/``,
then linked into ``new/`` (an atomic step: a reader sees the whole message or nothing), and the
directory entry is fsynced before we record the delivery. The file's name comes from the queue
entry and the mailbox, the same on every attempt: when the relay dies between the file and the
database row, the next attempt finds the file (in ``new/``, or in ``cur/`` where a reader moved
it) and records it instead of writing a second copy. Nothing is lost.

The entries are claimed, attempted and recorded as remote delivery's are: the queue's one
lease protocol (for ``SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS``), the one dequeuer
(``relay.delivery.engine.deliver_claimed``) with ``MaildirTransport`` as the transport, and
the one ``record`` of outcomes (retry times on the virtual server's intervals, tracking, a
failure DSN for a mailbox gone since RCPT).
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.utils import timezone

from relay.delivery.engine import deliver_claimed
from relay.delivery.paths import path_component
from relay.delivery.transports import Batch, Sent
from relay.queue import leases
from relay.queue.leases import claim, claim_due, local_lease_seconds, new_owner
from relay.queue.models import LinkQueue, QueueEntry, Recipient
from relay.queue.outcomes import DEFERRED, DELIVERED, FAILED, Handoff, Verdict
from servers.models import Mailbox
from smtpadmin.private import FILE_MODE, private_directory

__all__ = [
    "MaildirTransport",
    "deliver_due_local",
    "deliver_local",
    "find_delivered",
    "maildir_bytes",
    "maildir_name",
    "maildir_path",
    "path_component",
    "write_maildir",
]

LOCAL_HOP = "local delivery"  # the next hop tracking names
LOCAL_ENTRY_LOAD = ("message", "virtual_server__server", "queue__server", "queue__connector")
DELIVERED_REPLY = "250 2.0.0 Delivered to Maildir"
UNKNOWN_REPLY = "550 5.1.1 <{address}>: mailbox unavailable (unknown or disabled)"
FAILED_REPLY = "451 4.3.0 Local delivery failed: {error}"


# --- Maildir, pure file work -------------------------------------------------------------


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
    # new/ last: a reader that finds new/ (as a mail client or a test watching for mail does)
    # finds the whole Maildir, never one without cur/.
    for sub in ("tmp", "cur", "new"):
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


# --- delivering queue entries --------------------------------------------------------------


class Attempt(enum.Enum):
    FIRST = "first"  # no attempt at the entry began before: none of its files can exist
    AGAIN = "again"  # one did, and may have died after writing files but before recording


def _deliver_files(
    entry: QueueEntry, recipients: Sequence[Recipient], drop: str, host: str, attempt: Attempt
) -> list[Verdict]:
    """A verdict per recipient: delivered (its file), failed (no such mailbox any more) or
    deferred (the file system refused)."""
    message = entry.message
    folded = {r.address.lower() for r in recipients}
    # Disabled or deleted since RCPT time: the recipient fails now and its sender gets a DSN.
    known = set(
        Mailbox.objects.filter(address__in=folded, enabled=True).values_list("address", flat=True)
    )
    content = message.raw
    written: dict[str, Path] = {}  # one file per mailbox, however the address was spelled
    verdicts: list[Verdict] = []
    for recipient in recipients:
        address = recipient.address.lower()
        if address not in known:
            unknown = UNKNOWN_REPLY.format(address=recipient.address)
            verdicts.append(Verdict(recipient, FAILED, unknown, "5.1.1"))
            continue
        if address not in written:
            try:
                written[address] = write_maildir(
                    maildir_path(drop, address),
                    maildir_bytes(content, sender=message.sender, recipient=address),
                    maildir_name(message.received_at, message.queue_id, entry.pk, address, host),
                    fresh=attempt is Attempt.FIRST,
                )
            except OSError as exc:
                failure = FAILED_REPLY.format(error=f"{type(exc).__name__}: {exc}")
                verdicts.append(Verdict(recipient, DEFERRED, failure, "4.3.0"))
                continue
        path = str(written[address])
        verdicts.append(Verdict(recipient, DELIVERED, DELIVERED_REPLY, "2.0.0", detail=path))
    return verdicts


@dataclass(frozen=True)
class MaildirTransport:
    """Local delivery's transport: every recipient's file in its Maildir under ``drop``,
    named for ``host`` (the server's name)."""

    drop: str
    host: str

    def send(self, batch: Batch) -> Sent:
        verdicts: dict[int, tuple[Verdict, ...]] = {}
        for entry in batch.entries:
            attempt = Attempt.FIRST if entry.pk in batch.first_attempts else Attempt.AGAIN
            recipients = batch.recipients.get(entry.pk, ())
            verdicts[entry.pk] = tuple(
                _deliver_files(entry, recipients, self.drop, self.host, attempt)
            )
            batch.renew()
        return Sent(verdicts, Handoff(hop=LOCAL_HOP, transferred=False))


def _deliver(queue_pk: int, entries: Sequence[QueueEntry], owner: str, now: datetime) -> bool:
    """Deliver entries ``owner`` claimed from a local queue; False (and the claim given up)
    when the queue was frozen (or lost its server) since it was looked at."""
    queue = LinkQueue.objects.select_related("server").get(pk=queue_pk)
    if queue.frozen or queue.server is None:
        leases.release([e.pk for e in entries], owner)
        return False
    server = queue.server
    transport = MaildirTransport(server.effective_drop_directory, server.name)
    deliver_claimed(transport, queue, entries, owner, now, seconds=local_lease_seconds())
    return True


def deliver_local(entry_id: int, worker: str) -> bool:
    """Deliver one due local queue entry; False when it was not ours to deliver (not due,
    frozen, not local, or another worker got there first). A file-system failure leaves the
    entry in Retry with the next attempt scheduled by the virtual server's retry intervals."""
    local = QueueEntry.objects.filter(
        pk=entry_id, queue__kind=LinkQueue.Kind.LOCAL, queue__server__isnull=False
    )
    queue_pk = local.filter(queue__frozen=False).values_list("queue_id", flat=True).first()
    if queue_pk is None:
        return False
    now = timezone.now()
    owner = new_owner(worker)
    entries = claim([entry_id], owner, now, seconds=local_lease_seconds(), load=LOCAL_ENTRY_LOAD)
    return bool(entries) and _deliver(queue_pk, entries, owner, now)


def deliver_due_local(server_id: int, worker: str, limit: int = 100) -> int:
    """Deliver up to ``limit`` due local entries of this server's queues: the supervisor's
    sweep, and recovery of entries whose worker died (their leases expire). Returns how many
    it delivered (or retried)."""
    done = 0
    queues = LinkQueue.objects.filter(kind=LinkQueue.Kind.LOCAL, server_id=server_id, frozen=False)
    for queue_pk in queues.order_by("pk").values_list("pk", flat=True):
        if done >= limit:
            break
        now = timezone.now()
        owner = new_owner(worker)
        entries = claim_due(
            queue_pk,
            owner,
            now,
            seconds=local_lease_seconds(),
            limit=limit - done,
            load=LOCAL_ENTRY_LOAD,
        )
        if entries and _deliver(queue_pk, entries, owner, now):
            done += len(entries)
    return done
