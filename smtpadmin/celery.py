"""The Celery application: `celery -A smtpadmin worker` and `celery -A smtpadmin beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtpadmin.settings")

app = Celery("smtpadmin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
