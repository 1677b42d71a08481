"""The embedded broker (smtpadmin/broker.py): kombu's filesystem transport that publishes
atomically, takes tasks within its own folders and leaves no file behind; and a real Celery
worker on it draining a burst of deliver tasks.

The transport is used through real kombu connections on temporary folders, whatever broker
the environment configures for the rest of the suite."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

import smtpadmin.broker
from relay.tasks import deliver
from smtpadmin.broker import LEFTOVER_AFTER, queue_of
from smtpadmin.celery import app
from tests.relay.celery_harness import CeleryProcess, wait_until
from tests.relay.harness import process_environment

TRANSPORT = "smtpadmin.broker:Transport"
BURST = 200
DRAINED_WITHIN = 120.0  # seconds; a bound for a loaded machine, not a speed figure


def broker_options(var_dir: Path) -> dict[str, Any]:
    """The transport options settings.py gives the embedded broker under ``var_dir``."""
    broker = var_dir / "broker"
    return {
        "data_folder_in": str(broker / "queue"),
        "data_folder_out": str(broker / "queue"),
        "control_folder": str(broker / "control"),
        "processed_folder": str(broker / "processed"),
        "polling_interval": 0.05,
    }


@pytest.fixture
def options(tmp_path: Path) -> dict[str, Any]:
    made = broker_options(tmp_path)
    for key in ("data_folder_in", "control_folder", "processed_folder"):
        Path(made[key]).mkdir(parents=True, exist_ok=True)
    return made


@pytest.fixture
def connection(options: dict[str, Any]) -> Iterator[Connection]:
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        yield conn


@pytest.fixture
def name() -> str:
    """A queue of this test's own: kombu remembers declared queues process-wide."""
    return f"work-{uuid.uuid4().hex}"


def files(folder: str) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_published_task_is_taken_once_and_leaves_no_file(
    connection: Connection, name: str, options: dict[str, Any]
) -> None:
    queue = connection.SimpleQueue(name)
    queue.put({"n": 1})
    assert [queue_of(name) for name in files(options["data_folder_in"])] == [name]

    message = queue.get(timeout=1)
    message.ack()

    assert message.payload == {"n": 1}
    assert files(options["data_folder_in"]) == files(options["processed_folder"]) == []


def test_a_consumer_never_sees_a_task_that_is_still_being_written(
    connection: Connection, name: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a consumer listing the queue folder would find while the publisher is still
    serializing the task: nothing (kombu's own transport showed it an empty file)."""
    seen_while_writing: list[list[str]] = []
    serialize = smtpadmin.broker.dumps

    def dumps_watched(payload: Any) -> str:
        seen_while_writing.append(files(options["data_folder_in"]))
        return serialize(payload)

    monkeypatch.setattr(smtpadmin.broker, "dumps", dumps_watched)
    connection.SimpleQueue(name).put({"n": 1})

    assert seen_while_writing == [[]]
    assert len(files(options["data_folder_in"])) == 1


def test_tasks_come_out_in_publishing_order_also_those_published_after_a_listing(
    connection: Connection,
    name: str,
) -> None:
    queue = connection.SimpleQueue(name)
    for n in range(3):
        queue.put({"n": n})
    first = queue.get(timeout=1)  # lists the folder: the other two are remembered
    queue.put({"n": 3})

    taken = [first] + [queue.get(timeout=1) for _ in range(3)]

    assert [m.payload["n"] for m in taken] == [0, 1, 2, 3]
    for message in taken:
        message.ack()


def test_a_task_another_consumer_took_is_skipped_not_an_error(
    connection: Connection, name: str, options: dict[str, Any]
) -> None:
    """Two workers on one folder: names listed by one and taken by the other are passed over."""
    mine = connection.SimpleQueue(name)
    for n in range(4):
        mine.put({"n": n})
    mine.get(timeout=1).ack()  # this consumer has listed the other three
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as other:
        theirs = other.SimpleQueue(name)
        theirs.get(timeout=1).ack()
        theirs.get(timeout=1).ack()
    mine.put({"n": 4})

    left = [mine.get(timeout=1) for _ in range(2)]

    assert [m.payload["n"] for m in left] == [3, 4]
    with pytest.raises(mine.Empty):
        mine.get(block=False)


def test_leftovers_of_a_process_that_died_mid_publish_or_take_are_removed_on_opening(
    options: dict[str, Any],
) -> None:
    processed = Path(options["processed_folder"])
    stale = processed / "1_dead.work.msg"
    stale_part = processed / "2_dead.work.msg.part"
    fresh = processed / "3_busy.work.msg.part"  # another process is publishing it right now
    for path in (stale, stale_part, fresh):
        path.write_text("{}")
    old = time.time() - LEFTOVER_AFTER - 5
    for path in (stale, stale_part):
        os.utime(path, (old, old))

    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        conn.default_channel  # noqa: B018  (opening the channel is what cleans)

    assert files(str(processed)) == [fresh.name]


@pytest.mark.timeout(DRAINED_WITHIN + 60)
def test_a_real_worker_drains_a_burst_of_deliver_tasks_and_leaves_no_file(
    tmp_path: Path, transactional_db: Any
) -> None:
    """Celery worker as the Procfile runs it (prefork, concurrency 2) on the embedded broker
    in a temporary folder; 200 deliver tasks (of queues without due mail) published at once."""
    var_dir = tmp_path / "var"
    options = broker_options(var_dir)
    worker = CeleryProcess(
        "worker",
        "--concurrency",
        "2",
        "--loglevel",
        "INFO",
        ready=" ready.",
        env=process_environment(
            SMTPADMIN_VAR_DIR=str(var_dir),
            CELERY_BROKER_URL="filesystem://",
            SMTPADMIN_DELIVERY_ENQUEUE="true",
        ),
    ).start()
    try:
        with (
            app.connection_for_write(
                "filesystem://", transport=TRANSPORT, transport_options=options
            ) as connection,
            connection.Producer() as producer,
        ):
            for pk in range(BURST):
                deliver.apply_async((1_000_000 + pk,), producer=producer)

        def drained() -> bool:
            done = sum(
                "relay.tasks.deliver[" in line and "succeeded" in line for line in worker.output
            )
            return done == BURST and not files(options["data_folder_in"])

        assert wait_until(drained, DRAINED_WITHIN), worker.log()
        assert files(options["processed_folder"]) == []
    finally:
        worker.stop()
    assert files(options["data_folder_in"]) == files(options["processed_folder"]) == []
