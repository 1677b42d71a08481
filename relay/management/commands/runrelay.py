"""The relay worker of one server: ``python manage.py runrelay [--server NAME]``.

For now it is the worker skeleton the SMTP listeners will be built into: it registers the
server, writes its heartbeat, and loads (and logs) the configuration of the server's virtual
servers whenever it changes. It does not listen on any port yet, and says so.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.host import host_address, host_fqdn, software_version

log = logging.getLogger("relay.runrelay")

APPLICATION_NAME = "runrelay"


@dataclass(frozen=True)
class VirtualServerConfig:
    """What the listener of one virtual server depends on (for change detection and logs)."""

    id: int
    name: str
    binding: str
    desired_state: str
    modified_at: Any

    @classmethod
    def of(cls, virtual_server: VirtualServer) -> VirtualServerConfig:
        return cls(
            id=virtual_server.pk,
            name=virtual_server.name,
            binding=virtual_server.binding,
            desired_state=virtual_server.desired_state,
            modified_at=virtual_server.modified_at,
        )


def name_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Label this process's PostgreSQL sessions so pg_stat_activity shows who holds them."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('application_name', %s, false)", [APPLICATION_NAME])


class Command(BaseCommand):
    help = (
        "Run the relay worker of one server: register it, write its heartbeat and follow the "
        "configuration of its SMTP virtual servers. SIGTERM or Ctrl-C stops it cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--server",
            default=None,
            help="The server this worker runs as. Default: SMTPADMIN_SERVER_NAME.",
        )
        parser.add_argument("--once", action="store_true", help="Do a single pass, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="Seconds between passes (heartbeat and configuration check). Default: 5.",
        )

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
        self.server_name = name
        self.stopping = threading.Event()
        self.configuration: tuple[VirtualServerConfig, ...] | None = None
        self.version = software_version()
        self.address = host_address()

        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        connection_created.connect(name_connection)
        try:
            if connection.connection is not None:
                name_connection(None, connection)
            self.server = self.register_server()
            log.info("runrelay %s started as server '%s' (pid %d)", self.version, name, os.getpid())
            while True:
                self.close_stale_connections()
                self.write_heartbeat()
                self.load_configuration()
                if options["once"] or self.stopping.wait(interval):
                    break
        finally:
            connection_created.disconnect(name_connection)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("runrelay for server '%s' stopped", name)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stopping.set()

    # --- units of work: each returns whether it found something to do --------------------
    def close_stale_connections(self) -> bool:
        # Inside an atomic block (a test's transaction) closing would break the transaction.
        if connection.in_atomic_block:
            return False
        close_old_connections()
        return True

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

    def write_heartbeat(self) -> bool:
        if not Server.objects.filter(pk=self.server.pk).exists():
            log.warning("server '%s' was deleted; registering it again", self.server_name)
            self.server = self.register_server()
            self.configuration = None
        self.server.heartbeat(version=self.version, address=self.address)
        return True

    def load_configuration(self) -> bool:
        """Read this server's virtual servers; log them when they differ from the last pass."""
        configuration = tuple(
            VirtualServerConfig.of(vs)
            for vs in VirtualServer.objects.filter(server=self.server).order_by("pk")
        )
        if configuration == self.configuration:
            return False
        self.configuration = configuration
        for vs in configuration:
            log.info(
                "virtual server '%s' (id %d) on %s: desired state %s",
                vs.name,
                vs.id,
                vs.binding,
                vs.desired_state,
            )
        log.info(
            "listeners are not implemented yet; configuration loaded "
            "(%d virtual server%s of server '%s')",
            len(configuration),
            "" if len(configuration) == 1 else "s",
            self.server_name,
        )
        return True


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
