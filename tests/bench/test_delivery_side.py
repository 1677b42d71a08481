"""The bench's delivery-side figures: the relay's and the delivery side's CPU per message
beside Postfix's whole cost, and the broker's queue depth sampled during a run (a real
folder, a real private Redis). Nothing here is timed."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import procstat
from bench.depth import DepthSampler, folder_depth, redis_depth
from bench.relay_processes import RelaySetup
from bench.report import Sample, delivery_table, summarize
from bench.run import System, broker_depth, delivery_split, measured_cpu
from bench.services import PrivateRedis


def proc(pid: int, ticks: int) -> procstat.ProcStat:
    return procstat.ProcStat(pid=pid, ppid=0, ticks=ticks, rss_bytes=0)


def test_a_relay_setups_cpu_is_split_into_the_relays_and_the_delivery_sides() -> None:
    tick = procstat.CLOCK_TICKS
    roles = {"relay": [1], "worker": [2], "beat": [3], "postgres": [4], "redis": [5]}
    before = {pid: proc(pid, 0) for pid in range(1, 7)}
    after = {1: proc(1, 4 * tick), 2: proc(2, 2 * tick), 3: proc(3, 0), 4: proc(4, tick)}
    after |= {5: proc(5, tick), 6: proc(6, tick)}

    figures = measured_cpu(before, after, roles, sink_pid=6, messages=100)

    assert figures["relay_cpu_ms"] == pytest.approx(40.0)
    assert figures["delivery_cpu_ms"] == pytest.approx(40.0)  # worker 20 + postgres 10 + redis 10
    assert figures["cpu_ms"] == pytest.approx(80.0)


def test_the_embedded_setup_has_no_database_or_broker_process_to_count() -> None:
    split = delivery_split({"cpu_ms_relay": 5.0, "cpu_ms_worker": 3.0, "cpu_ms_beat": 0.5})

    assert split == {"relay_cpu_ms": 5.0, "delivery_cpu_ms": 3.5}


def test_postfix_has_no_split_its_cpu_is_its_whole_cost() -> None:
    assert delivery_split({"cpu_ms_postfix": 2.0, "cpu_ms": 2.0}) == {}


def test_the_delivery_table_puts_both_sides_beside_postfixs_whole_cost() -> None:
    relay = {
        "relay_cpu_ms": 4.0,
        "delivery_cpu_ms": 2.0,
        "cpu_ms": 6.0,
        "e2e_rate": 50.0,
        "broker_max_depth": 3.0,
    }
    summaries = summarize(
        [
            Sample("throughput", "postfix", 1, 10, {"cpu_ms": 2.0, "e2e_rate": 500.0}),
            Sample("throughput", "relay-embedded", 1, 10, relay),
        ]
    )

    lines = delivery_table(summaries, ["postfix", "relay-embedded"]).splitlines()

    assert lines[1].split() == [
        "clients",
        "system",
        "relay",
        "delivery",
        "all",
        "x",
        "Postfix",
        "e2e",
        "msg/s",
        "max",
        "depth",
    ]
    assert lines[2].split() == ["10", "postfix", "2.00", "500"]
    assert lines[3].split() == [
        "10",
        "relay-embedded",
        "4.00",
        "2.00",
        "6.00",
        "3.00",
        "50.0",
        "3.00",
    ]


def test_without_a_relay_there_is_no_delivery_table() -> None:
    summaries = summarize([Sample("throughput", "postfix", 1, 10, {"cpu_ms": 2.0})])

    assert delivery_table(summaries) == ""


def test_the_filesystem_brokers_depth_is_its_task_files(tmp_path: Path) -> None:
    for n in range(3):
        (tmp_path / f"{n}_id.celery.msg").write_text("{}")
    (tmp_path / "0_id.celery.msg.part").write_text("{")  # being published: not a task yet

    assert folder_depth(tmp_path) == 3
    assert folder_depth(tmp_path / "not-yet") == 0


def test_the_embedded_setup_samples_its_own_broker_folder(tmp_path: Path) -> None:
    setup = RelaySetup("embedded", tmp_path, sink_port=0)
    setup.broker_folder().mkdir(parents=True)
    (setup.broker_folder() / "1_id.celery.msg").write_text("{}")

    assert setup.queue_depth() == 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_the_redis_depth_is_every_queue_list_and_nothing_else(
    private_redis: PrivateRedis,
) -> None:
    import redis

    client = redis.Redis.from_url(private_redis.url)
    client.rpush("celery", "a", "b", "c")
    client.rpush("celery\x06\x163", "d", "e")  # kombu's list of a queue's priority 3
    client.hset("unacked", "tag", "task")  # the tasks being worked on: not waiting
    client.set("_kombu.binding.celery", "x")

    assert redis_depth(client) == 5
    client.close()


def test_the_postgres_setup_samples_its_private_redis(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    import redis

    setup = RelaySetup("postgres", tmp_path, sink_port=0, redis=private_redis)
    client = redis.Redis.from_url(private_redis.url)
    client.rpush("celery", "a", "b")

    assert setup.queue_depth() == 2
    client.close()
    setup.stop()  # closes its client (and stops the Redis, which the fixture would)


def test_a_sampler_keeps_the_maximum_and_what_is_left_at_the_end(tmp_path: Path) -> None:
    for n in range(4):
        (tmp_path / f"{n}_id.celery.msg").write_text("{}")
    sampled = threading.Event()

    def probe() -> int:
        depth = folder_depth(tmp_path)
        sampled.set()
        return depth

    with DepthSampler(probe, interval=0.01) as sampler:
        assert sampled.wait(10)
        for path in tmp_path.iterdir():
            path.unlink()

    assert sampler.maximum == 4
    assert sampler.samples[-1] == 0


def test_a_failed_sample_is_skipped_not_the_measurement() -> None:
    values = iter([2])

    def probe() -> int:
        return next(values)  # StopIteration from the second sample on

    with DepthSampler(probe, interval=0.01) as sampler:
        pass

    assert sampler.maximum == 2
    assert sampler.errors >= 1


def test_the_maximum_depth_is_a_figure_of_systems_with_a_broker_only(tmp_path: Path) -> None:
    (tmp_path / "1_id.celery.msg").write_text("{}")
    embedded = System("relay-embedded", 0, dict, depth=lambda: folder_depth(tmp_path))
    postfix = System("postfix", 0, dict)

    with broker_depth(embedded) as figures:
        pass
    with broker_depth(postfix) as none:
        pass

    assert figures == {"broker_max_depth": 1.0}
    assert none == {}
