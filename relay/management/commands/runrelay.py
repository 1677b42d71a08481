"""The relay worker of one server: ``python manage.py runrelay [--server NAME]``.

It registers the server, then runs the supervisor (``relay.smtp.supervisor``) on an asyncio
loop: one SMTP listener per enabled virtual server of this server, following configuration
changes within a second or two, with heartbeat, Current Sessions and local delivery.
SIGTERM or Ctrl-C stops accepting, lets sessions in DATA finish (``--grace``) and exits.

With more than one process (``--processes``, ``SMTPADMIN_RELAY_PROCESSES``; one per core by
default) this process is the parent of that many intake processes (``relay.smtp.processes``),
which are this same command started with ``--intake-of``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from relay.smtp.processes import (
    PipeWriter,
    ProcessSupervisor,
    available_cores,
    die_with_parent,
    intake_processes,
)
from relay.smtp.shared_counts import SharedCounts, rows_of
from relay.smtp.supervisor import IntakeRole, Supervisor
from servers.models import RoutingGroup, Server
from smtpadmin import counters
from smtpadmin.host import host_address, host_fqdn, software_version
from smtpadmin.readiness import TOUCH_SECONDS, Toucher

log = logging.getLogger("relay.runrelay")

APPLICATION_NAME = "runrelay"


def name_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Label this process's PostgreSQL sessions so pg_stat_activity shows who holds them."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('application_name', %s, false)", [APPLICATION_NAME])


class Command(BaseCommand):
    help = (
        "Run the relay worker of one server: its SMTP listeners, heartbeat, Current Sessions "
        "and local delivery. SIGTERM or Ctrl-C stops it cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--server",
            default=None,
            help="The server this worker runs as. Default: SMTPADMIN_SERVER_NAME.",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="One pass (register, heartbeat, bind and report the listeners), then exit.",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=1.0,
            help="Seconds between configuration checks. Default: 1.",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="Seconds sessions in DATA get to finish when stopping. Default: 30.",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help=(
                "Intake processes on the same ports (1: everything in this one process; "
                "0: one per core). Default: SMTPADMIN_RELAY_PROCESSES."
            ),
        )
        # Set by the parent on the intake processes it starts (relay.smtp.processes).
        parser.add_argument("--intake-of", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--intake-pipe", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--intake-counts", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--intake-row", type=int, default=0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = (options["server"] or settings.SMTPADMIN_SERVER_NAME).strip()
        interval: float = options["interval"]
        if not name:
            raise CommandError("The server name cannot be empty.")
        limit = settings.SMTPADMIN_HEARTBEAT_TIMEOUT
        if not 0 < interval < limit:
            raise CommandError(
                f"--interval must be above 0 and below the heartbeat timeout ({limit} s)."
            )
        if options["grace"] < 0:
            raise CommandError("--grace cannot be negative.")
        if options["processes"] is not None and options["processes"] < 0:
            raise CommandError("--processes cannot be negative.")
        if (options["intake_of"] is None) != (options["intake_pipe"] is None):
            raise CommandError("--intake-of and --intake-pipe go together.")
        processes = intake_processes(
            options["processes"], settings.SMTPADMIN_RELAY_PROCESSES, available_cores()
        )
        self.server_name = name
        version = software_version()
        child = options["intake_of"] is not None
        # Ctrl-C reaches the whole process group; an intake process leaves it to the parent,
        # which stops the children itself (and must not see one gone and restart it).
        self.stop_signals = (signal.SIGTERM,) if child else _STOP_SIGNALS
        # A stop asked for before the event loop runs (during startup) is kept, not lost.
        self.stop_requested: int | None = None
        previous = {
            signum: signal.signal(signum, self._early_signal) for signum in self.stop_signals
        }
        if child:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        connection_created.connect(name_connection)
        try:
            if connection.connection is not None:
                name_connection(None, connection)
            intake: IntakeRole | None = None
            if child:
                intake = self.intake_role(options)
                if intake is None:
                    return
                server = Server.objects.get(name=name)  # the parent registered it
                log.info("intake process of server '%s' started (pid %d)", name, os.getpid())
            else:
                server = self.register_server()
                log.info("runrelay %s started as server '%s' (pid %d)", version, name, os.getpid())
            supervisor: Supervisor | ProcessSupervisor
            if intake is None and processes > 1 and not options["once"]:
                log.info("running %d intake processes", processes)
                supervisor = ProcessSupervisor(
                    server,
                    processes=processes,
                    interval=interval,
                    heartbeat_interval=min(5.0, limit / 3),
                    grace=options["grace"],
                    version=version,
                    address=host_address(),
                )
            else:
                supervisor = Supervisor(
                    server,
                    interval=interval,
                    heartbeat_interval=min(5.0, limit / 3),
                    grace=options["grace"],
                    version=version,
                    address=host_address(),
                    intake=intake,
                )
            if not options["once"]:
                counters.enable(settings.SMTPADMIN_COUNTER_FLUSH_SECONDS)
            toucher = None
            if intake is None and not options["once"]:
                # Ready while the heartbeat reaches the database (`manage.py ready relay`).
                beat = supervisor.heartbeat_interval
                toucher = Toucher(
                    "relay",
                    name,
                    lambda: time.monotonic() - supervisor.last_heartbeat <= 3 * beat,
                    seconds=min(TOUCH_SECONDS, beat),
                ).start()
            try:
                asyncio.run(self.serve(supervisor, once=options["once"]))
            finally:
                if toucher is not None:
                    toucher.stop()
        finally:
            connection_created.disconnect(name_connection)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("runrelay for server '%s' stopped", name)

    def intake_role(self, options: dict[str, Any]) -> IntakeRole | None:
        """What the parent handed this intake process; None when the parent is already gone."""
        parent: int = options["intake_of"]
        if not die_with_parent(parent):
            log.warning("the relay supervisor (pid %d) is gone; not starting", parent)
            return None
        counts_fd: int | None = options["intake_counts"]
        counts = (
            None
            if counts_fd is None
            else SharedCounts(counts_fd, rows_of(counts_fd), options["intake_row"])
        )
        return IntakeRole(parent, PipeWriter(options["intake_pipe"]), counts)

    def _early_signal(self, signum: int, frame: Any) -> None:
        self.stop_requested = signum

    async def serve(self, supervisor: Supervisor | ProcessSupervisor, *, once: bool) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.stop_signals:
            loop.add_signal_handler(signum, self._on_signal, signum, supervisor)
        if self.stop_requested is not None:
            self._on_signal(self.stop_requested, supervisor)
        try:
            if once:
                try:
                    await supervisor.run_pass()
                finally:
                    await supervisor.shutdown()
            else:
                await supervisor.run()
        finally:
            for signum in self.stop_signals:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int, supervisor: Supervisor | ProcessSupervisor) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        supervisor.stop()

    def register_server(self) -> Server:
        """This host's Server row, created in the first routing group when missing."""
        server = Server.objects.filter(name=self.server_name).first()
        if server is not None:
            return server
        server = Server(name=self.server_name, fqdn=host_fqdn(), routing_group=RoutingGroup.first())
        try:
            server.full_clean()
            with transaction.atomic():
                server.save()
        except ValidationError as exc:
            raise CommandError(f"Cannot register server '{self.server_name}': {exc}") from None
        except IntegrityError:
            # Another worker with the same --server name registered it first.
            return Server.objects.get(name=self.server_name)
        log.info("registered server '%s' (%s)", server.name, server.fqdn)
        return server


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
