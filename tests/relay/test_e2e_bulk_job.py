"""A bulk job through a real ``celery -A smtpadmin worker``: the API answers 202, the worker
(which finds ``relay.admin.jobs.run_job`` by the app's registration) does the work, and the
job's URL shows it done."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from relay.admin import jobs
from relay.models import QueueEntry
from relay.queue.models import BulkJob
from smtpadmin.roles import Role
from tests.conftest import client_for, make_person
from tests.relay.celery_harness import CeleryProcess, wait_until, worker
from tests.relay.queue_world import make_queues
from tests.relay.test_e2e_delivery import lose_every_task


@pytest.fixture
def celery_worker(transactional_db: Any) -> Iterator[CeleryProcess]:
    lose_every_task()
    process = worker().start()
    yield process
    process.stop()
    print(f"--- celery worker ---\n{process.log()}")  # shown on failure


def test_a_worker_runs_the_job_the_api_answered_202_for(
    tmp_path: Any, celery_worker: CeleryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "SYNC_LIMIT", 2)
    queues = make_queues(tmp_path)
    for n in range(5):
        queues.send([f"u{n}@spam.example"])
    api = client_for(make_person("adam-admin", Role.ADMINISTRATOR))

    answer = api.post(
        "/api/v1/messages/bulk",
        {"filter": {"domain": "spam.example"}, "action": "freeze"},
        format="json",
    )

    assert answer.status_code == 202, answer.content
    url = answer.json()["url"]
    done = wait_until(lambda: api.get(url).json()["state"] == BulkJob.State.DONE, 60, 0.5)
    assert done, celery_worker.log()
    assert api.get(url).json()["done"] == 5
    assert QueueEntry.objects.filter(state=QueueEntry.State.FROZEN).count() == 5
