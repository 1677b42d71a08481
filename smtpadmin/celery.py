"""The Celery application: `celery -A smtpadmin worker` and `celery -A smtpadmin beat`."""

import atexit
import os
import socket
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_init, worker_ready, worker_shutdown

from smtpadmin.private import private_directory

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtpadmin.settings")

app = Celery("smtpadmin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _make_broker_folders() -> None:
    """kombu's filesystem transport (the embedded broker) needs its folders to exist; they
    hold the queued tasks, so they are private (0700)."""
    from django.conf import settings

    if str(settings.CELERY_BROKER_URL).startswith("filesystem"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
            private_directory(options[key])


_make_broker_folders()


@worker_init.connect
def _count_in_this_worker(**kwargs: Any) -> None:
    """The worker's counts (deliveries, DSNs) are written every few seconds; its pool
    processes inherit the setting and write their own."""
    from django.conf import settings

    from smtpadmin import counters

    counters.enable(settings.SMTPADMIN_COUNTER_FLUSH_SECONDS)


# --- readiness files (smtpadmin.readiness): `manage.py ready worker|beat` reads them -----------
_touchers: dict[str, Any] = {}


@worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    from smtpadmin.readiness import Toucher

    consumer = sender  # the worker's consumer: ready once it is connected to the broker

    def connected() -> bool:
        connection = getattr(consumer, "connection", None)
        return bool(connection is not None and connection.connected)

    _touchers["worker"] = Toucher("worker", consumer.hostname, connected).start()


@worker_shutdown.connect
def _worker_shutdown(**kwargs: Any) -> None:
    if toucher := _touchers.pop("worker", None):
        toucher.stop()


@beat_init.connect
def _beat_init(sender: Any = None, **kwargs: Any) -> None:
    from smtpadmin.readiness import Toucher

    service = sender
    stopped = getattr(service, "_is_shutdown", None)  # set by beat's own shutdown
    toucher = Toucher(
        "beat", socket.gethostname(), lambda: stopped is None or not stopped.is_set()
    ).start()
    _touchers["beat"] = toucher
    atexit.register(toucher.stop)
