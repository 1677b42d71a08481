"""The suite's markers, applied by where a test lives (a pytest plugin, listed in
``tests/conftest.py``; the markers are registered in pyproject.toml):

``e2e``
    The test starts processes (runrelay, Celery) or talks SMTP over real sockets to a running
    relay: every ``test_e2e_*.py`` module, ``test_runrelay.py``, ``test_celery_wiring.py`` and
    everything under ``tests/bench``; other modules
    mark themselves (``pytestmark = pytest.mark.e2e``) or single tests.
    ``pytest -m "not e2e and not browser"`` is the fast inner loop.
``soak``
    A long variant. Deselected unless asked for: ``-m soak`` (any ``-m`` naming soak) or
    ``SMTPADMIN_SOAK=1``.
``browser``
    Set by ``tests/browser/conftest.py``. The tests under ``tests/browser`` also share one
    xdist group, so under ``--dist loadgroup`` one worker starts Chromium once for all of them.

The hook runs before pytest's own ``-m`` selection (a plugin's hook runs before the built-in
one), so ``-m "not e2e"`` sees these markers.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
E2E_MODULES = ("test_e2e_*.py", "test_runrelay.py", "test_celery_wiring.py")
E2E_DIRECTORIES = (TESTS / "bench",)
BROWSER_DIRECTORY = TESTS / "browser"


def soak_requested(config: pytest.Config) -> bool:
    return os.environ.get("SMTPADMIN_SOAK", "") not in ("", "0") or "soak" in (
        config.option.markexpr or ""
    )


def is_e2e_module(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in E2E_MODULES) or any(
        folder in path.parents for folder in E2E_DIRECTORIES
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if is_e2e_module(path):
            item.add_marker(pytest.mark.e2e)
        if BROWSER_DIRECTORY in path.parents:
            item.add_marker(pytest.mark.xdist_group("browser"))
    if soak_requested(config):
        return
    soaks = [item for item in items if item.get_closest_marker("soak") is not None]
    if soaks:
        config.hook.pytest_deselected(items=soaks)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]
