"""The people of the tests: a full administrator, an administrator, a view-only administrator
and an outsider (a user with no role), plus API clients logged in as each."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from smtpadmin.roles import Role, set_role

# Shared fixtures live in plugin modules, never in (or imported from) a test module. A module is
# listed before any plugin that imports it, so that pytest can rewrite its asserts.
pytest_plugins = [
    "tests.isolation",  # per-process VAR_DIR; per-xdist-worker broker
    "tests.markers",  # e2e by module, soak only when asked, the browser xdist group
    "tests.dnsserver",  # dns_server
    "tests.sinks",  # sink
    "tests.relay.outbound",  # no_socket_left_open (by usefixtures), refusing_port
    "tests.relay.engine_world",  # outbound
    "tests.relay.queue_world",  # queues, admin_api, viewer_api
    "tests.relay.dashboard_world",  # counts, server_with_heartbeat
]

PASSWORD = "correct horse battery staple"


def make_person(username: str, role: Role) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD)
    set_role(user, role)
    return user


@pytest.fixture
def full_admin(db: Any) -> User:
    return make_person("fiona-full", Role.FULL)


@pytest.fixture
def administrator(db: Any) -> User:
    return make_person("adam-admin", Role.ADMINISTRATOR)


@pytest.fixture
def view_only(db: Any) -> User:
    return make_person("vera-viewer", Role.VIEW_ONLY)


@pytest.fixture
def outsider(db: Any) -> User:
    return make_person("otto-outsider", Role.NONE)


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api_as() -> Any:
    """``api_as(user)`` gives an API client authenticated as that user (None = anonymous)."""
    return client_for


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Real hashers are slow on purpose; the tests check behaviour, not key stretching."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def no_dns_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test asks the host's resolver: DNS comes from the loopback server of ``dns_server``
    (which sets SMTPADMIN_DNS_SERVERS); without it, lookups fail at once."""
    monkeypatch.setattr("relay.dns.RESOLV_CONF", os.devnull)


@pytest.fixture(autouse=True)
def no_delivery_tasks(settings: Any) -> None:
    """Tests without a Celery worker publish no delivery tasks (the broker would only fill up);
    the end-to-end delivery tests turn it back on. A delivery called in a test says QUIT as
    soon as its queue is empty (Celery workers keep the default connection cache time)."""
    settings.SMTPADMIN_DELIVERY_ENQUEUE = False
    settings.SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS = 0
