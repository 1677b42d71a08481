"""The test suite's own machinery: what keeps parallel test processes apart (tests/isolation.py),
the markers (tests/markers.py) and threads whose failures reach the test (tests/threads.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings

from smtpadmin.celery import app
from tests.isolation import broker_url_for_worker, worker_index
from tests.markers import TESTS, is_e2e_module, soak_requested
from tests.threads import TestThread, finish_all


@pytest.mark.parametrize(
    ("url", "index", "expected"),
    [
        ("redis://127.0.0.1:6379/9", 0, "redis://127.0.0.1:6379/9"),
        ("redis://127.0.0.1:6379/9", 2, "redis://127.0.0.1:6379/11"),
        ("redis://127.0.0.1:6379/0", 1, "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", 3, "redis://127.0.0.1:6379/3"),
        ("redis://:pw@127.0.0.1:6379/4?timeout=2", 1, "redis://:pw@127.0.0.1:6379/5?timeout=2"),
        ("rediss://cache.test:6380/2", 1, "rediss://cache.test:6380/3"),
        ("filesystem://", 3, "filesystem://"),
    ],
)
def test_each_xdist_worker_gets_the_redis_database_n_above_the_configured_one(
    url: str, index: int, expected: str
) -> None:
    assert broker_url_for_worker(url, index) == expected


def test_this_process_keeps_its_files_and_broker_to_itself() -> None:
    var_dir = Path(settings.VAR_DIR)
    assert not var_dir.is_relative_to(Path(settings.BASE_DIR))
    assert os.environ["SMTPADMIN_VAR_DIR"] == str(var_dir)
    assert app.conf.broker_url == settings.CELERY_BROKER_URL == os.environ["CELERY_BROKER_URL"]
    if str(settings.CELERY_BROKER_URL).startswith("filesystem"):
        folder = Path(app.conf.broker_transport_options["data_folder_in"])
        assert folder.is_relative_to(var_dir) and folder.is_dir()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert worker_index() == int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))


@pytest.mark.parametrize(
    ("path", "e2e"),
    [
        (TESTS / "relay" / "test_e2e_sessions.py", True),
        (TESTS / "relay" / "test_runrelay.py", True),
        (TESTS / "bench" / "test_relay_intake_bench.py", True),
        (TESTS / "relay" / "test_intake.py", False),
        (TESTS / "relay" / "harness_test_e2e.py", False),
    ],
)
def test_end_to_end_tests_are_known_by_their_module(path: Path, e2e: bool) -> None:
    assert is_e2e_module(path) is e2e


@pytest.mark.parametrize(
    ("markexpr", "environment", "wanted"),
    [
        ("", "", False),
        ("not e2e and not browser", "", False),
        ("soak", "", True),
        ("soak and not browser", "", True),
        ("", "1", True),
        ("", "0", False),
    ],
)
def test_soak_tests_run_only_when_asked_for(
    markexpr: str, environment: str, wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPADMIN_SOAK", environment)
    config: Any = SimpleNamespace(option=SimpleNamespace(markexpr=markexpr))
    assert soak_requested(config) is wanted


def test_an_assert_failing_in_a_thread_fails_the_test() -> None:
    def check() -> None:
        assert 1 + 1 == 3, "arithmetic in a thread"

    thread = TestThread(check)
    thread.start()
    with pytest.raises(AssertionError, match="arithmetic in a thread"):
        thread.finish(5)


def test_a_thread_still_running_fails_the_test() -> None:
    release = threading.Event()
    thread = TestThread(release.wait, 10)
    thread.start()
    try:
        with pytest.raises(AssertionError, match="still running"):
            finish_all([thread], 0.05)
    finally:
        release.set()
        thread.finish(5)
