"""An SMTP credential's send limit as the database counts it: one conditional UPDATE of the
credential's hourly bucket, so the allowance is shared by every relay process and no two
sessions can both take the last message of it."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
from django.db import connection, connections

from relay.smtp.auth import check_credentials
from relay.smtp.send_limits import SendLimit, send_limit_of, take_message
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from servers.models.security import hour_number
from tests.threads import TestThread, finish_all

PASSWORD = "s3cret-Passw0rd"
NOON = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)


def credential(limit: int | None = 3) -> SmtpCredential:
    made = SmtpCredential(username="app", send_limit_per_hour=limit)
    made.set_password(PASSWORD)
    made.save()
    return made


def limit_of(made: SmtpCredential) -> SendLimit:
    found = send_limit_of(made)
    assert found is not None
    return found


@pytest.mark.django_db
def test_the_fourth_message_in_an_hour_is_refused_and_the_next_hour_passes() -> None:
    made = credential(3)
    limit = limit_of(made)
    minute = datetime.timedelta(minutes=1)

    assert [take_message(limit, NOON + i * minute) for i in range(4)] == [True] * 3 + [False]
    made.refresh_from_db()
    assert made.sent_this_hour(NOON) == 3
    # The next hour has its own allowance.
    later = NOON + datetime.timedelta(hours=1)
    assert made.sent_this_hour(later) == 0
    assert take_message(limit, later)
    made.refresh_from_db()
    assert made.sent_this_hour(later) == 1


@pytest.mark.django_db
def test_a_process_whose_clock_is_behind_counts_into_the_later_hour() -> None:
    made = credential(2)
    limit = limit_of(made)
    later = NOON + datetime.timedelta(hours=1)
    assert take_message(limit, later)
    assert take_message(limit, NOON)  # the slow clock: counted in the later hour
    assert not take_message(limit, later)
    made.refresh_from_db()
    assert (made.sent_hour, made.sent_in_hour) == (hour_number(later), 2)


@pytest.mark.django_db
def test_a_credential_without_a_limit_has_nothing_to_count() -> None:
    assert send_limit_of(credential(None)) is None


@pytest.mark.django_db
def test_a_successful_login_hands_the_session_the_credential_limit() -> None:
    made = credential(3)
    server = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    vs = VirtualServer.objects.create(server=server, ip_address="127.0.0.1", port=2525)
    outcome = check_credentials("app", PASSWORD, virtual_server_id=vs.pk, client_ip="127.0.0.1")
    assert outcome.ok
    assert outcome.send_limit == SendLimit(made.pk, "app", 3)


@pytest.mark.django_db(transaction=True)
def test_sessions_taking_the_last_messages_together_never_exceed_the_limit() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises the whole database)")
    made = credential(5)
    limit = limit_of(made)
    start = threading.Barrier(8)
    taken: list[bool] = []
    lock = threading.Lock()

    def session() -> None:
        try:
            start.wait(10)
            for _ in range(3):
                result = take_message(limit, NOON)
                with lock:
                    taken.append(result)
        finally:
            connections.close_all()

    threads = [TestThread(session, name=f"session-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    finish_all(threads, 30)

    assert taken.count(True) == 5 and len(taken) == 24
    made.refresh_from_db()
    assert made.sent_this_hour(NOON) == 5


def test_hours_are_numbered_from_1970_in_utc(settings: Any) -> None:
    assert hour_number(datetime.datetime(1970, 1, 1, 0, 59, tzinfo=datetime.UTC)) == 0
    eastern = datetime.timezone(datetime.timedelta(hours=-5))
    assert hour_number(NOON) == hour_number(datetime.datetime(2026, 12, 3, 7, 30, tzinfo=eastern))


@pytest.mark.django_db(transaction=True)
def test_counting_leaves_the_connection_committing_synchronously() -> None:
    """The relay's database threads also run intake: the counter's asynchronous commit is its
    own statement's, never the connection's."""
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    limit = limit_of(credential(3))
    assert take_message(limit, NOON)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)
