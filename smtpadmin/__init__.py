"""smtpadmin: project wiring and the shared core (roles, audit log, organization settings)."""

from smtpadmin.celery import app as celery_app

__all__ = ["celery_app"]
