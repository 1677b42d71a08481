"""What a session leaves for operators: one log line when it ends (client, HELO, messages with
their queue ids, refusals, bytes, time), and the counters of mail received and refused that
the dashboard and /metrics show."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest

from relay.metrics import RECEIVED, REFUSED
from smtpadmin.counters import COUNTERS, labels_text
from smtpadmin.models import TotalCount
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]


def total(name: str, **labels: str) -> int:
    COUNTERS.flush()
    row = TotalCount.objects.filter(name=name, labels=labels_text(labels)).first()
    return row.value if row else 0


def test_a_session_ends_with_one_log_line_and_its_mail_is_counted(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.smtp")
    vs = world.vs.name
    received_before = total(RECEIVED, virtual_server=vs)
    TotalCount.objects.filter(name=REFUSED).delete()
    relay(world.server)
    with smtp(world.port) as client:
        client.ehlo("client.test")
        client.mail("sender@outside.test")
        assert client.rcpt("victim@elsewhere.test")[0] == 550  # no relay for strangers
        client.rcpt("alice@smtpadmin.test")
        code, reply = client.data(message("Counted"))
    assert code == 250
    queue_id = re.search(rb"queued as ([A-Z0-9]+)", reply)[1].decode()  # type: ignore[index]

    def ended() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("session ended")]

    (line,) = wait_for(ended, 10)
    text = line.getMessage()
    assert f"queue_ids={queue_id}" in text and "messages=1" in text and "refusals=1" in text
    assert "helo=client.test" in text and "client=127.0.0.1" in text
    assert line.virtual_server == vs and line.duration_ms >= 0  # type: ignore[attr-defined]

    assert total(RECEIVED, virtual_server=vs) == received_before + 1
    refused = dict(TotalCount.objects.filter(name=REFUSED).values_list("labels", "value"))
    assert refused == {
        labels_text({"virtual_server": vs, "reason": "550 5.7.1 relaying denied"}): 1
    }
