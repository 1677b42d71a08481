"""The Celery application: `celery -A smtpadmin worker` and `celery -A smtpadmin beat`."""

import os

from celery import Celery

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
