"""``manage.py runrelay`` as a process: kill -9 right after 250s loses nothing; SIGTERM stops
cleanly."""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
import threading
from pathlib import Path

from relay.models import Message
from servers.models import VirtualServer
from tests.relay.harness import smtp, start_runrelay, wait_for
from tests.relay.world import World, message
from tests.threads import TestThread, finish_all


def start_worker(world: World, tmp_path: Path) -> subprocess.Popen[bytes]:
    return start_runrelay(world.server.name, tmp_path / "var")


def listening(port: int) -> bool:
    try:
        with smtp(port, timeout=1) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


def test_messages_answered_250_survive_kill_9(world: World, tmp_path: Path) -> None:
    world.configure(messages_per_connection=None)
    worker = start_worker(world, tmp_path)
    try:
        wait_for(lambda: listening(world.port), 20)
        accepted: list[str] = []
        killed = threading.Event()
        stop = threading.Event()

        def blast() -> None:
            # Send until the kill breaks the connection; remember every queue id the relay
            # confirmed. Anything else (a refusal, a reply without a queue id, a break before
            # the kill) fails the test through finish_all.
            try:
                with smtp(world.port) as client:
                    client.ehlo()
                    while not stop.is_set():
                        client.mail("load@outside.test")
                        client.rcpt("alice@smtpadmin.test")
                        code, reply = client.data(message("load"))
                        assert code == 250, reply
                        found = re.search(rb"queued as ([A-Z0-9]+)", reply)
                        assert found, reply
                        accepted.append(found.group(1).decode())
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                if not killed.is_set():
                    raise

        senders = [TestThread(blast) for _ in range(3)]
        for sender in senders:
            sender.start()
        # A sender that died early fails the test below with its own error, not a time-out.
        wait_for(lambda: len(accepted) >= 30 or not all(s.is_alive() for s in senders), 30)
        killed.set()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        stop.set()
        finish_all(senders, 10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    stored = set(Message.objects.values_list("queue_id", flat=True))
    missing = [qid for qid in accepted if qid not in stored]
    assert len(accepted) >= 30
    assert missing == []


def test_sigterm_stops_the_worker_cleanly(world: World, tmp_path: Path) -> None:
    worker = start_worker(world, tmp_path)
    try:
        wait_for(lambda: listening(world.port), 20)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output.decode(errors="replace")
    assert b"Traceback" not in output
    world.vs.refresh_from_db()
    assert world.vs.state == VirtualServer.State.STOPPED
    assert not listening(world.port)
