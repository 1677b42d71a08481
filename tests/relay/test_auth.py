"""SMTP AUTH against the SMTP credentials: the outcome, the same answer (and the same work)
for an unknown name as for a wrong password, lockout per (name, client address) pair and the
per-name back-off that never keeps the right password out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from relay.smtp.auth import (
    INVALID,
    LOCKED,
    SUCCESS,
    AuthOutcome,
    backoff_delay,
    check_credentials,
)
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from smtpadmin import throttle
from smtpadmin.models import LoginThrottle
from tests.counting_hasher import HASHER, CountingHasher

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Passw0rd"
CLIENT = "203.0.113.9"


@pytest.fixture(autouse=True)
def counting_hasher(settings: Any) -> type[CountingHasher]:
    settings.PASSWORD_HASHERS = [HASHER]
    CountingHasher.reset()
    return CountingHasher


@pytest.fixture
def servers() -> tuple[VirtualServer, VirtualServer]:
    node = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return (
        VirtualServer.objects.create(server=node, name="one", port=2525),
        VirtualServer.objects.create(server=node, name="two", port=2526),
    )


@pytest.fixture
def vs(servers: tuple[VirtualServer, VirtualServer]) -> VirtualServer:
    return servers[0]


def make_credential(username: str = "alice", **fields: Any) -> SmtpCredential:
    credential = SmtpCredential(username=username, **fields)
    credential.set_password(PASSWORD)
    credential.full_clean()
    credential.save()
    return credential


def login(
    vs: VirtualServer, username: str = "alice", password: str = PASSWORD, ip: str = CLIENT
) -> AuthOutcome:
    return check_credentials(username, password, virtual_server_id=vs.pk, client_ip=ip)


def fail_times(vs: VirtualServer, n: int, username: str = "alice", ip: str = CLIENT) -> None:
    for _ in range(n):
        assert login(vs, username, "wrong", ip=ip).reply == INVALID


def move_clock_past_the_lock() -> None:
    """Instead of sleeping 15 minutes: date every lock and failure back."""
    past = timezone.now() - timedelta(minutes=16)
    LoginThrottle.objects.update(locked_until=past, first_failure_at=past - timedelta(minutes=15))
    SmtpCredential.objects.update(locked_until=past)


# --- outcomes -----------------------------------------------------------------------------


def test_the_right_password_authenticates_and_records_the_use(vs: VirtualServer) -> None:
    credential = make_credential()

    outcome = login(vs)

    assert outcome == AuthOutcome(ok=True, reply=SUCCESS, username="alice", delay=0.0)
    assert outcome.reply == "235 2.7.0 Authentication successful"
    credential.refresh_from_db()
    assert credential.last_used_at is not None
    assert timezone.now() - credential.last_used_at < timedelta(minutes=1)


def test_a_wrong_password_is_refused_and_slowed_down(vs: VirtualServer) -> None:
    credential = make_credential()

    outcome = login(vs, password="wrong")

    assert outcome == AuthOutcome(ok=False, reply=INVALID, delay=1.0)
    assert outcome.reply == "535 5.7.8 Authentication credentials invalid"
    credential.refresh_from_db()
    assert credential.failed_logins == 1 and credential.last_used_at is None


def test_an_unknown_name_gets_the_same_answer_as_a_wrong_password(vs: VirtualServer) -> None:
    make_credential()

    unknown = login(vs, "nobody", ip="198.51.100.1")
    wrong = login(vs, "alice", "wrong", ip="198.51.100.2")

    assert unknown == wrong == AuthOutcome(ok=False, reply=INVALID, delay=1.0)


def test_an_unknown_name_costs_the_same_password_check_as_a_known_one(
    vs: VirtualServer, counting_hasher: type[CountingHasher]
) -> None:
    make_credential()

    login(vs, "alice", "wrong")
    known = len(counting_hasher.checks)
    login(vs, "nobody", "wrong")
    unknown = len(counting_hasher.checks) - known

    assert known == unknown == 1
    assert counting_hasher.checks[-1].startswith("counting_md5$")  # a real hash, not a shortcut


def test_a_disabled_credential_is_refused_even_with_the_right_password(
    vs: VirtualServer,
) -> None:
    make_credential(enabled=False)

    assert login(vs).reply == INVALID


def test_a_credential_limited_to_another_virtual_server_is_refused(
    servers: tuple[VirtualServer, VirtualServer],
) -> None:
    one, two = servers
    credential = make_credential()
    credential.virtual_servers.set([two])

    assert login(one).reply == INVALID
    assert login(two).ok


def test_a_credential_without_virtual_servers_is_good_for_all(
    servers: tuple[VirtualServer, VirtualServer],
) -> None:
    make_credential()

    assert login(servers[0]).ok and login(servers[1]).ok


def test_names_compare_exactly(vs: VirtualServer) -> None:
    make_credential()

    assert login(vs, "Alice").reply == INVALID


def test_runtime_fields_are_written_without_a_configuration_save(vs: VirtualServer) -> None:
    credential = make_credential()
    modified = credential.modified_at

    login(vs, password="wrong")
    login(vs)

    credential.refresh_from_db()
    assert credential.modified_at == modified  # auto_now: only save() would have moved it


@pytest.mark.parametrize(
    ("username", "password"),
    [("al\x00ice", PASSWORD), ("alice\r\n", PASSWORD), ("al\udcffice", PASSWORD)],
)
def test_control_characters_in_a_name_are_refused_without_a_database_error(
    vs: VirtualServer, username: str, password: str
) -> None:
    make_credential()

    assert login(vs, username, password).reply == INVALID


def test_undecodable_bytes_in_a_password_never_match(vs: VirtualServer) -> None:
    credential = SmtpCredential(username="bob")
    credential.set_password("pass?word")
    credential.save()

    assert login(vs, "bob", "pass\udcffword").reply == INVALID
    assert login(vs, "bob", "pass?word").ok


# --- slowing down and lockout -------------------------------------------------------------


def test_the_delay_grows_with_failures_up_to_a_cap(vs: VirtualServer) -> None:
    make_credential()

    delays = [login(vs, password="wrong").delay for _ in range(5)]

    assert delays == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_five_failures_lock_the_name_from_that_address_even_against_the_right_password(
    vs: VirtualServer, counting_hasher: type[CountingHasher]
) -> None:
    credential = make_credential()
    fail_times(vs, 5)
    checks = len(counting_hasher.checks)

    outcome = login(vs)

    assert outcome == AuthOutcome(ok=False, reply=LOCKED, delay=5.0)
    assert outcome.reply == (
        "454 4.7.0 Temporarily locked after repeated failed logins; try again later"
    )
    assert len(counting_hasher.checks) == checks  # a locked pair costs no hashing
    credential.refresh_from_db()
    assert credential.failed_logins == 5
    assert credential.locked_until is not None and credential.locked_until > timezone.now()


def test_a_locked_name_still_logs_in_from_another_address(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 5, ip=CLIENT)
    assert login(vs, ip=CLIENT).reply == LOCKED

    assert login(vs, ip="198.51.100.7").ok


def test_a_locked_address_still_logs_in_with_other_names(vs: VirtualServer) -> None:
    make_credential("alice")
    make_credential("bob")
    fail_times(vs, 5, username="alice")

    assert login(vs, "bob").ok


def test_failures_for_many_names_from_one_address_lock_none_of_them(vs: VirtualServer) -> None:
    make_credential()
    for name in ("a", "b", "c", "d", "e", "f"):
        fail_times(vs, 1, username=name)

    assert login(vs, ip=CLIENT).ok


def test_the_lock_is_released_after_the_lock_time(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 5)
    assert login(vs).reply == LOCKED

    move_clock_past_the_lock()

    assert login(vs).ok


def test_four_failures_do_not_lock(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 4)

    assert login(vs).ok


def test_a_success_forgets_earlier_failures_of_that_address(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 4)
    assert login(vs).ok
    fail_times(vs, 4)

    assert login(vs).ok


def test_failures_older_than_the_window_are_forgotten(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 4)
    LoginThrottle.objects.update(first_failure_at=timezone.now() - timedelta(minutes=16))
    fail_times(vs, 1)

    assert login(vs).ok


def test_an_unknown_name_is_locked_exactly_like_a_known_one(vs: VirtualServer) -> None:
    fail_times(vs, 5, username="ghost", ip="198.51.100.1")

    assert login(vs, "ghost", "anything", ip="198.51.100.1").reply == LOCKED


def test_a_name_under_attack_from_many_addresses_slows_down_but_lets_the_right_password_in(
    vs: VirtualServer,
) -> None:
    credential = make_credential()
    attackers = [f"198.51.100.{n}" for n in range(1, 5)]
    for ip in attackers:
        fail_times(vs, 5, ip=ip)
        assert login(vs, ip=ip).reply == LOCKED

    pause = backoff_delay("alice")

    assert 0 < pause <= throttle.NAME_BACKOFF_MAX == 3.0
    assert login(vs, ip="192.0.2.44").ok
    credential.refresh_from_db()
    assert credential.failed_logins == 20  # the name's failures, shown in the console


def test_the_name_back_off_starts_after_ten_failures_and_is_capped() -> None:
    delays = []
    for n in range(14):
        delays.append(backoff_delay("carol"))
        throttle.reserve(throttle.Scope.SMTP, "carol", f"198.51.100.{n}")
        throttle.failed(throttle.Scope.SMTP, "carol", f"198.51.100.{n}")

    assert delays == [0.0] * 10 + [1.0, 2.0, 3.0, 3.0]


def test_an_unknown_name_is_slowed_down_exactly_like_a_known_one(vs: VirtualServer) -> None:
    make_credential()
    for n in range(12):
        login(vs, "alice", "wrong", ip=f"198.51.100.{n}")
        login(vs, "ghost", "wrong", ip=f"198.51.100.{n}")

    assert backoff_delay("alice") == backoff_delay("ghost") > 0


def test_the_lock_shown_on_the_credential_does_not_lock_other_addresses(
    vs: VirtualServer,
) -> None:
    make_credential()
    SmtpCredential.objects.update(locked_until=timezone.now() + timedelta(minutes=5))

    assert login(vs).ok


def test_a_new_password_unlocks_the_name(vs: VirtualServer) -> None:
    credential = make_credential()
    fail_times(vs, 5)
    assert login(vs).reply == LOCKED

    credential.set_password("another-Passw0rd")
    credential.save()

    assert login(vs, password="another-Passw0rd").ok
    credential.refresh_from_db()
    assert credential.failed_logins == 0 and credential.locked_until is None


def test_an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_client_as_ipv4() -> None:
    assert throttle.client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert throttle.client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert throttle.client_key("fe80::1%eth0") == "fe80::/64"


def test_another_address_of_the_same_ipv6_64_is_still_locked(vs: VirtualServer) -> None:
    make_credential()
    for n in range(5):
        fail_times(vs, 1, ip=f"2001:db8:1:2::{n + 1}")

    assert login(vs, ip="2001:db8:1:2::ff").reply == LOCKED
    assert login(vs, ip="2001:db8:1:3::1").ok


def test_a_mapped_ipv4_client_shares_the_lock_of_its_ipv4_address(vs: VirtualServer) -> None:
    make_credential()
    fail_times(vs, 5, ip="203.0.113.9")

    assert login(vs, ip="::ffff:203.0.113.9").reply == LOCKED
