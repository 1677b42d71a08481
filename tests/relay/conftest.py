"""Fixtures of the relay tests: the relay worker in a thread (``relay``), a small
organization (``world``) and the delivery wake-ups as published (``published``). Fixtures for
all tests (``sink``, ``outbound``, ``queues``...) are plugin modules listed in
``tests/conftest.py``."""

from collections.abc import Iterator
from typing import Any

import pytest

from relay import tasks
from relay.queue import dispatch
from relay.smtp.auth import CACHE
from tests.relay.harness import relay
from tests.relay.world import world

__all__ = ["forget_verified_passwords", "published", "relay", "world"]


@pytest.fixture(autouse=True)
def forget_verified_passwords() -> None:
    """The relay's AUTH cache lives as long as the process: no test inherits another's."""
    CACHE.clear()


@pytest.fixture
def published(settings: Any) -> Iterator[list[list[int]]]:
    """Wake-ups published (instead of Celery tasks)."""
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    sent: list[list[int]] = []

    def publish(pks: Any) -> list[int]:
        sent.append(list(pks))
        return []

    dispatch.register_publisher(publish)
    try:
        yield sent
    finally:
        dispatch.register_publisher(tasks.enqueue_queues)
