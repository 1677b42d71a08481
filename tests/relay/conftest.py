"""Fixtures of the relay tests: the relay worker in a thread and a small organization."""

from tests.relay.harness import relay
from tests.relay.world import world
from tests.sinks import sink

__all__ = ["relay", "sink", "world"]
