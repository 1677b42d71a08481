"""smtpadmin: project wiring and the shared core (roles, audit log, organization settings)."""

from smtpadmin.private import restrict_umask

# Every process (manage.py, celery, gunicorn) imports this package before it writes anything:
# the files libraries create under var/ (SQLite's, kombu's, beat's) are then its user's alone.
restrict_umask()

from smtpadmin.celery import app as celery_app  # noqa: E402 -- after the umask: it makes folders

__all__ = ["celery_app"]
