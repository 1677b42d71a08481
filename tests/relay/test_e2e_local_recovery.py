"""``manage.py runrelay`` killed with SIGKILL after a message reached the Maildir and before
the database recorded it: the next relay delivers it exactly once, after the configured lease.

Where it dies is made deterministic by a database trigger that refuses to record the delivery,
so the relay under test writes the file into new/ and can get no further."""

from __future__ import annotations

import mailbox
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from tests.relay.harness import smtp, start_runrelay, wait_for
from tests.relay.world import World, message

LEASE_SECONDS = 2


def start_relay(world: World, tmp_path: Path) -> subprocess.Popen[bytes]:
    return start_runrelay(
        world.server.name,
        tmp_path / "var",
        SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS=str(LEASE_SECONDS),
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def listening(port: int) -> bool:
    try:
        with smtp(port, timeout=1) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


@contextmanager
def deliveries_not_recorded() -> Iterator[None]:
    """Every attempt to mark a recipient delivered fails, in any process, until the end."""
    table = Recipient._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                f"CREATE TRIGGER test_no_delivered BEFORE UPDATE OF state ON {table} "
                "WHEN NEW.state = 'delivered' "
                "BEGIN SELECT RAISE(ABORT, 'the relay dies before recording'); END"
            )
        else:
            cursor.execute(
                "CREATE FUNCTION test_no_delivered() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'the relay dies before recording'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER test_no_delivered BEFORE UPDATE OF state ON {table} "
                "FOR EACH ROW WHEN (NEW.state = 'delivered') EXECUTE FUNCTION test_no_delivered()"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("DROP TRIGGER IF EXISTS test_no_delivered")
            else:
                cursor.execute(f"DROP TRIGGER IF EXISTS test_no_delivered ON {table}")
                cursor.execute("DROP FUNCTION IF EXISTS test_no_delivered()")


def in_new(world: World, address: str) -> list[Path]:
    folder = world.maildir(address) / "new"
    return list(folder.iterdir()) if folder.is_dir() else []


def maildir_files(world: World, address: str) -> list[Path]:
    folder = world.maildir(address)
    subs = [folder / sub for sub in ("tmp", "new", "cur") if (folder / sub).is_dir()]
    return [path for sub in subs for path in sub.iterdir()]


@pytest.mark.parametrize("read_meanwhile", [False, True], ids=["in-new", "moved-to-cur"])
def test_a_relay_killed_between_the_maildir_file_and_the_database_delivers_once(
    world: World, tmp_path: Path, read_meanwhile: bool
) -> None:
    with deliveries_not_recorded():
        first = start_relay(world, tmp_path)
        try:
            wait_for(lambda: listening(world.port), 30)
            with smtp(world.port) as client:
                client.sendmail("sender@outside.test", ["alice@smtpadmin.test"], message("Once"))
            # In new/, and the database cannot record it: the moment to die.
            (written,) = wait_for(lambda: in_new(world, "alice@smtpadmin.test"), 20)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
    killed_at = time.time()
    if read_meanwhile:
        # A mail client opened the mailbox before the relay came back: new/ to cur/, seen.
        written = written.rename(written.parent.parent / "cur" / f"{written.name}:2,S")

    entry = QueueEntry.objects.get(message=Message.objects.get())
    assert entry.state == QueueEntry.State.READY
    assert entry.lease_owner and entry.lease_until is not None
    # The lease the next relay must wait out is the configured one, not minutes.
    assert entry.lease_until <= entry.message.received_at + timedelta(seconds=LEASE_SECONDS + 3)

    second = start_relay(world, tmp_path)
    try:
        wait_for(lambda: QueueEntry.objects.get(pk=entry.pk).state == QueueEntry.State.DONE, 30)
        recovered_after = time.time() - killed_at
    finally:
        stop(second)

    assert maildir_files(world, "alice@smtpadmin.test") == [written]
    (delivered,) = mailbox.Maildir(world.maildir("alice@smtpadmin.test"), create=False)
    assert delivered["Subject"] == "Once"
    assert entry.recipients.get().state == Recipient.State.DELIVERED
    assert TrackingEvent.objects.filter(kind="delivered").count() == 1
    assert recovered_after < 25
