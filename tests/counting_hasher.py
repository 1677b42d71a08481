"""A real (fast) password hasher that counts the passwords it checks, from any thread: the
proof of how many guesses were really tried, without mocking the throttle."""

from __future__ import annotations

import threading
from typing import ClassVar

from django.contrib.auth.hashers import MD5PasswordHasher

HASHER = "tests.counting_hasher.CountingHasher"


class CountingHasher(MD5PasswordHasher):
    algorithm = "counting_md5"
    checks: ClassVar[list[str]] = []
    _lock = threading.Lock()

    def verify(self, password: str, encoded: str) -> bool:
        with CountingHasher._lock:
            CountingHasher.checks.append(encoded)
        return super().verify(password, encoded)

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.checks.clear()
