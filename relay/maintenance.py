"""Beat's housekeeping tasks beside the sweep: message tracking retention and bulk jobs that
stopped moving. Thin: the work is in ``relay.queue.prune`` and ``relay.admin.jobs``."""

from __future__ import annotations

import logging

from celery import shared_task

from relay.admin import jobs
from relay.queue import prune

log = logging.getLogger("relay.maintenance")


@shared_task(acks_late=True, ignore_result=True)
def prune_history() -> dict[str, int]:
    """Remove tracking events and finished messages older than the retention (bounded:
    batches of ``SMTPADMIN_PRUNE_BATCH``, ``SMTPADMIN_PRUNE_SECONDS`` at most)."""
    done = prune.prune()
    if done.events or done.messages:
        log.info(
            "Removed %d tracking event(s) and %d message(s) older than %s%s",
            done.events,
            done.messages,
            done.cutoff.isoformat(timespec="seconds"),
            "" if done.complete else " (more next run)",
        )
    return {"events": done.events, "messages": done.messages, "complete": int(done.complete)}


@shared_task(acks_late=True, ignore_result=True)
def resume_stalled_jobs() -> list[int]:
    """Publish again the bulk jobs that made no progress for ``SMTPADMIN_JOB_STALL_MINUTES``."""
    return jobs.resume_stalled()
