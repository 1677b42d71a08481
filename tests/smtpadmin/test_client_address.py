"""The client address of a web request: X-Forwarded-For only from a trusted reverse proxy
(SMTPADMIN_TRUSTED_PROXIES), read right to left, so entries a client made up are ignored."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from smtpadmin import throttle
from smtpadmin.clients import forwarded_client
from smtpadmin.env import EnvironmentError_, env_networks
from tests.conftest import PASSWORD

PROXY = "10.0.0.5"
PROXIES = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("2001:db8:ff::/48")]


# --- reading the header -----------------------------------------------------------------------


def test_without_a_trusted_proxy_the_header_is_ignored() -> None:
    assert forwarded_client(PROXY, "198.51.100.7", []) == PROXY


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_sends() -> None:
    assert forwarded_client("192.0.2.9", "198.51.100.7", PROXIES) == "192.0.2.9"


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client() -> None:
    assert forwarded_client(PROXY, "198.51.100.7", PROXIES) == "198.51.100.7"


def test_made_up_entries_left_of_the_proxys_own_are_ignored() -> None:
    forged = "203.0.113.1, 203.0.113.2, 198.51.100.7"

    assert forwarded_client(PROXY, forged, PROXIES) == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_through() -> None:
    chain = "203.0.113.1, 198.51.100.7, 10.0.0.9, 2001:db8:ff::2"

    assert forwarded_client(PROXY, chain, PROXIES) == "198.51.100.7"


def test_addresses_with_ports_and_brackets_are_understood() -> None:
    assert forwarded_client(PROXY, "198.51.100.7:51234", PROXIES) == "198.51.100.7"
    assert forwarded_client(PROXY, "[2001:db8::7]:443", PROXIES) == "2001:db8::7"


def test_garbage_where_the_proxy_writes_falls_back_to_the_last_good_hop() -> None:
    assert forwarded_client(PROXY, "198.51.100.7, not-an-address", PROXIES) == PROXY
    assert forwarded_client(PROXY, "", PROXIES) == PROXY


def test_when_every_hop_is_trusted_the_left_most_is_the_client() -> None:
    assert forwarded_client(PROXY, "10.0.0.7, 10.0.0.8", PROXIES) == "10.0.0.7"


# --- the setting ------------------------------------------------------------------------------


def test_the_setting_reads_addresses_and_networks() -> None:
    environ = {"SMTPADMIN_TRUSTED_PROXIES": " 10.0.0.5, 172.16.0.0/12 ,2001:db8::/32"}

    networks = env_networks("SMTPADMIN_TRUSTED_PROXIES", [], environ)

    assert networks == ["10.0.0.5/32", "172.16.0.0/12", "2001:db8::/32"]


@pytest.mark.parametrize("raw", ["proxy.example.com", "10.0.0.0/33", "10.0.0.1/24", "10.0.0.5,"])
def test_a_bad_trusted_proxy_stops_the_start_with_a_clear_error(raw: str) -> None:
    with pytest.raises(EnvironmentError_, match="SMTPADMIN_TRUSTED_PROXIES"):
        env_networks("SMTPADMIN_TRUSTED_PROXIES", [], {"SMTPADMIN_TRUSTED_PROXIES": raw})


# --- the login lock uses it -------------------------------------------------------------------


def fail_behind_proxy(username: str, forwarded_for: str) -> None:
    client = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded_for)
    for n in range(throttle.MAX_FAILURES):
        client.post("/login/", {"username": username, "password": f"guess-{n}"})


def login_behind_proxy(username: str, forwarded_for: str) -> int:
    client = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded_for)
    return client.post("/login/", {"username": username, "password": PASSWORD}).status_code


@pytest.mark.django_db
def test_without_the_setting_a_forged_header_does_not_escape_a_lock(
    full_admin: User, settings: Any
) -> None:
    settings.SMTPADMIN_TRUSTED_PROXIES = []
    fail_behind_proxy(full_admin.username, "198.51.100.7")

    assert login_behind_proxy(full_admin.username, "198.51.100.99") == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_console_user_has_their_own_lock(
    full_admin: User, settings: Any
) -> None:
    settings.SMTPADMIN_TRUSTED_PROXIES = ["10.0.0.0/24"]
    fail_behind_proxy(full_admin.username, "198.51.100.7")

    assert login_behind_proxy(full_admin.username, "198.51.100.7") == 429
    assert login_behind_proxy(full_admin.username, "198.51.100.8") == 302


@pytest.mark.django_db
def test_a_forged_left_most_entry_does_not_escape_a_lock(full_admin: User, settings: Any) -> None:
    settings.SMTPADMIN_TRUSTED_PROXIES = ["10.0.0.0/24"]
    fail_behind_proxy(full_admin.username, "198.51.100.7")

    assert login_behind_proxy(full_admin.username, "192.0.2.1, 198.51.100.7") == 429


@pytest.mark.django_db
def test_the_api_token_endpoint_reads_the_same_address(full_admin: User, settings: Any) -> None:
    settings.SMTPADMIN_TRUSTED_PROXIES = ["10.0.0.0/24"]
    fail_behind_proxy(full_admin.username, "198.51.100.7")
    client = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1, 198.51.100.7")

    response = client.post(
        "/api/v1/auth/token/",
        {"username": full_admin.username, "password": PASSWORD},
        content_type="application/json",
    )

    assert response.status_code == 429


@pytest.mark.django_db
def test_a_forged_header_does_not_escape_the_token_request_rate(
    full_admin: User, settings: Any
) -> None:
    settings.SMTPADMIN_TRUSTED_PROXIES = []
    cache.clear()
    answers = []
    for n in range(21):
        client = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
        data = {"username": full_admin.username, "password": PASSWORD}
        answers.append(
            client.post("/api/v1/auth/token/", data, content_type="application/json").status_code
        )
    cache.clear()

    assert answers[:20] == [200] * 20
    assert answers[20] == 429
