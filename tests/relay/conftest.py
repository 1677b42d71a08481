"""Fixtures of the relay tests: the relay worker in a thread (``relay``) and a small
organization (``world``). Fixtures for all tests (``sink``, ``outbound``, ``queues``...) are
plugin modules listed in ``tests/conftest.py``."""

import pytest

from relay.smtp.auth import CACHE
from tests.relay.harness import relay
from tests.relay.world import world

__all__ = ["forget_verified_passwords", "relay", "world"]


@pytest.fixture(autouse=True)
def forget_verified_passwords() -> None:
    """The relay's AUTH cache lives as long as the process: no test inherits another's."""
    CACHE.clear()
