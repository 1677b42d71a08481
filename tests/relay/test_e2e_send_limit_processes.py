"""An SMTP credential's send limit under ``runrelay --processes 2``: the intake processes
share one count per credential (in the database), so sessions spread over both processes
together get no more than the limit."""

from __future__ import annotations

from typing import Any

from servers.models import SmtpCredential
from tests.relay.test_e2e_processes import Start, send, start
from tests.relay.world import PASSWORD, World

__all__ = ["start"]  # the fixture, used by name


def test_the_send_limit_is_counted_across_intake_processes(
    world: World, start: Start, settings: Any
) -> None:
    # A hash the relay processes can check: they run with the project's hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    world.credential.set_password(PASSWORD)
    world.credential.send_limit_per_hour = 3
    world.credential.save()
    relay = start("--processes", "2")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    first, second = (held[pid][0] for pid in sorted(pids))
    for client in (first, second):
        client.login("relayuser", PASSWORD)

    send(first, "one")
    send(first, "two")
    send(second, "three")
    for client in (second, first):
        code, reply = client.mail("app@smtpadmin.test")
        assert (code, reply[:5]) == (450, b"4.7.1"), reply
        client.rset()
    world.delivered("alice@smtpadmin.test", count=3)
    credential = SmtpCredential.objects.get(pk=world.credential.pk)
    assert credential.sent_this_hour() == 3
