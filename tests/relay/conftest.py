"""Fixtures of the relay tests: the relay worker in a thread (``relay``) and a small
organization (``world``). Fixtures for all tests (``sink``, ``outbound``, ``queues``...) are
plugin modules listed in ``tests/conftest.py``."""

from tests.relay.harness import relay
from tests.relay.world import world

__all__ = ["relay", "world"]
