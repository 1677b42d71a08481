"""The ledger fault tests: numbered messages through the real relay process to a sink (via a
smart-host connector and Celery workers) and to a local Maildir while one fault strikes.
Every message answered 250 must arrive (delivered, or an NDR) at least once; duplicates are
counted and must stay within the messages in flight at the fault.

Fast variant: a few hundred messages per fault (SMTPADMIN_LEDGER_FAST_N, default 200). The soak
variant (``make soak``: SMTPADMIN_SOAK=1, SMTPADMIN_LEDGER_N >= 10000) prints per fault:
sent, accepted, delivered, lost, duplicates and the bound.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ledger.harness import BATCH, Rig
from tests.ledger.ledger import FIGURES, LOCAL_EVERY, LedgerClients, figures

pytestmark = [pytest.mark.e2e]

SIZES = [pytest.param("fast", id="fast"), pytest.param("soak", id="soak", marks=pytest.mark.soak)]
RELAY_THREADS = 8  # the relay's database pool: local deliveries in flight at once, at most
IN_FLIGHT = 1  # outbound messages sent and not yet recorded by a worker, at most

RigFactory = Callable[..., Rig]


def message_count(size: str) -> int:
    if size == "soak":
        if os.environ.get("SMTPADMIN_SOAK", "") != "1":
            pytest.skip("the soak variant runs with SMTPADMIN_SOAK=1 (make soak)")
        return int(os.environ.get("SMTPADMIN_LEDGER_N", "10000"))
    return int(os.environ.get("SMTPADMIN_LEDGER_FAST_N", "200"))


def run_ledger(
    rig: Rig,
    fault_name: str,
    count: int,
    fault: Callable[[LedgerClients], None],
    bound: Callable[[LedgerClients], int],
    *,
    before_settling: Callable[[], None] | None = None,
) -> None:
    """Send ``count`` messages, strike with ``fault`` once a third is accepted, let the
    system settle, then check the ledger against what arrived."""
    started = time.monotonic()
    clients = LedgerClients(rig.port, rig.password, range(1, count + 1)).start()
    assert clients.wait_accepted(count // 3, timeout=60 + count / 5), "no progress before the fault"
    fault(clients)
    finished = clients.finish(timeout=120 + count / 5)
    ledger = clients.ledger
    if before_settling is not None:
        before_settling()
    accepted = set(ledger.accepted)
    settled = rig.settle(accepted, timeout=120 + count / 10)
    census = rig.census()
    result = figures(fault_name, ledger, census, bound(clients), time.monotonic() - started)
    print(result.line(), dict(ledger.replies.most_common(3)))
    FIGURES.append(result.line())
    assert ledger.rejected == {}, f"5xx answers: {list(ledger.rejected.items())[:5]}"
    assert finished, f"only {result.accepted} of {count} messages were ever answered 250"
    lost = sorted(accepted - census.arrived())
    assert lost == [], f"{len(lost)} answered 250 never arrived: {lost[:20]}; {rig.stuck()}"
    assert settled, f"{rig.open_entries()} queue entries still open after the settling time"
    assert result.duplicates <= result.bound, result.line()


@pytest.mark.parametrize("size", SIZES)
def test_a_relay_killed_with_9_mid_load_loses_no_accepted_message(
    ledger_rig: RigFactory, size: str
) -> None:
    count = message_count(size)
    rig = ledger_rig()
    rig.start_relay()
    rig.worker()
    rig.beat()

    def kill_relay(clients: LedgerClients) -> None:
        assert rig.relay is not None
        rig.relay.kill()
        time.sleep(1.0)
        rig.relay.start()

    # Each unanswered DATA may be stored twice; each local delivery in flight written twice.
    run_ledger(
        rig,
        "a relay kill -9",
        count,
        kill_relay,
        lambda clients: sum(clients.ledger.unanswered.values()) + RELAY_THREADS,
    )


@pytest.mark.parametrize("size", SIZES)
def test_b_a_celery_worker_killed_mid_batch_loses_nothing(
    ledger_rig: RigFactory, size: str
) -> None:
    count = message_count(size)
    rig = ledger_rig()
    rig.start_relay()
    first = rig.worker()
    rig.beat()

    def kill_worker(clients: LedgerClients) -> None:
        # Mid-batch: while the worker holds leases on outbound entries.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not leased_outbound(rig):
            time.sleep(0.01)
        first.kill()
        rig.worker()

    # Each message's outcome is recorded as its reply arrives: the one message in flight on
    # the worker's one connection (a solo pool) is all it can send twice.
    run_ledger(
        rig,
        "b celery worker kill -9",
        count,
        kill_worker,
        lambda clients: IN_FLIGHT + sum(clients.ledger.unanswered.values()),
    )


def leased_outbound(rig: Rig) -> bool:
    rows = rig.postgres.query(
        "SELECT count(*) FROM relay_queueentry e JOIN relay_linkqueue q ON q.id = e.queue_id "
        "WHERE q.kind <> 'local' AND e.state <> 'done' AND e.lease_until > now()",
        rig.database,
    )
    return bool(rows[0][0])


@pytest.mark.parametrize("size", SIZES)
def test_c_redis_flushed_and_restarted_mid_load_loses_nothing(
    ledger_rig: RigFactory, size: str
) -> None:
    count = message_count(size)
    rig = ledger_rig()
    rig.start_relay()
    rig.worker()
    rig.beat()

    def flush_and_restart(clients: LedgerClients) -> None:
        rig.redis.client().flushall()
        rig.redis.stop()
        time.sleep(2.0)
        rig.redis.start()

    run_ledger(
        rig,
        "c redis flushall + restart",
        count,
        flush_and_restart,
        lambda clients: BATCH + sum(clients.ledger.unanswered.values()),
    )


@pytest.mark.parametrize("size", SIZES)
def test_d_postgres_restarted_mid_load_gets_4xx_never_250_and_everything_recovers(
    ledger_rig: RigFactory, size: str
) -> None:
    count = message_count(size)
    rig = ledger_rig()
    relay = rig.start_relay()
    worker = rig.worker()
    rig.beat()
    away: dict[str, int] = {}

    def restart_postgres(clients: LedgerClients) -> None:
        ledger = clients.ledger
        rig.postgres.stop("fast")
        # A transaction committed just before the stop may still get its 250 now.
        time.sleep(1.0)
        with ledger.lock:
            accepted_before, deferred_before = len(ledger.accepted), sum(ledger.deferred.values())
        time.sleep(4.0)
        with ledger.lock:
            away["accepted"] = len(ledger.accepted) - accepted_before
            away["deferred"] = sum(ledger.deferred.values()) - deferred_before
        rig.postgres.start()

    run_ledger(
        rig,
        "d postgres restart",
        count,
        restart_postgres,
        lambda clients: BATCH + sum(clients.ledger.unanswered.values()),
    )
    assert away["accepted"] == 0, "the relay answered 250 while the database was away"
    assert away["deferred"] > 0, "the relay answered no 4xx while the database was away"
    # Recovered by themselves: the same relay and worker processes did all of it.
    assert relay.alive() and relay.starts == 1
    assert worker.process is not None and worker.process.poll() is None


@pytest.mark.parametrize("size", SIZES)
def test_e_a_sink_hanging_up_after_data_gets_the_message_again(
    ledger_rig: RigFactory, size: str
) -> None:
    count = message_count(size)
    rig = ledger_rig()
    rig.start_relay()
    rig.worker()
    rig.beat()

    def hang_up_after_data(clients: LedgerClients) -> None:
        rig.sink.drop_at("ACCEPTED")
        time.sleep(3.0)
        rig.sink.calm()

    # Each hang-up leaves one message taken but not acknowledged: sent again, a duplicate.
    run_ledger(
        rig,
        "e sink drops after DATA",
        count,
        hang_up_after_data,
        lambda clients: rig.sink.drops + sum(clients.ledger.unanswered.values()),
    )
    assert rig.sink.drops > 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(kilobytes)`` mounts a tmpfs that small as the Maildir drop (root may
    mount; otherwise the test cannot run); unmounted afterwards."""
    mounts: list[Path] = []

    def mount(kilobytes: int) -> Path:
        path = tmp_path / f"small-disk-{len(mounts)}"
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            reason = f"cannot mount a small tmpfs for the disk-full test: {result.stderr.strip()}"
            if os.environ.get("SMTPADMIN_REQUIRE_FAULTS", "") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Writes the disk's filler (made empty before any mail) until the disk is full. The file
    exists already because creating one can itself fail with ENOSPC while the relay writes."""
    filler = disk / "filler"
    with filler.open("ab") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


@pytest.mark.parametrize("size", SIZES)
def test_f_a_full_maildir_disk_defers_and_delivers_exactly_once_when_space_returns(
    ledger_rig: RigFactory, small_disk: Callable[[int], Path], size: str
) -> None:
    count = message_count(size)
    # Room for every local message (a 4 KB page each, twice over) once the filler is gone.
    disk = small_disk(1024 + 8 * (count // LOCAL_EVERY + 1))
    (disk / "filler").touch()
    rig = ledger_rig(drop=disk / "maildrop")
    relay = rig.start_relay()
    rig.worker()
    rig.beat()
    full: dict[str, int] = {}

    def fill_the_disk(clients: LedgerClients) -> None:
        filler = fill(disk)
        # Local deliveries fail (and wait for their retry) while clients go on sending.
        accepted = clients.accepted_count()
        clients.wait_accepted(accepted + count // 5, timeout=60 + count / 10)
        time.sleep(1.0)
        full["deferred"] = deferred_local(rig)
        filler.unlink()

    def force_connection() -> None:
        # The administrator's Force Connection once the disk has space again.
        rig.manage("force")

    run_ledger(
        rig,
        "f maildir disk full",
        count,
        fill_the_disk,
        lambda clients: sum(clients.ledger.unanswered.values()),
        before_settling=force_connection,
    )
    assert full["deferred"] > 0, "no local delivery was deferred on the full disk"
    assert relay.alive() and relay.starts == 1
    assert rig.census().duplicates() == 0


def deferred_local(rig: Rig) -> int:
    rows = rig.postgres.query(
        "SELECT count(*) FROM relay_queueentry e JOIN relay_linkqueue q ON q.id = e.queue_id "
        "WHERE q.kind = 'local' AND e.state = 'retry'",
        rig.database,
    )
    return int(rows[0][0])
