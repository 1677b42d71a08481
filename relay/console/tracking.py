"""The Message Tracking Center: find messages in the tracking events of every server (by
Message-ID, queue id, sender, recipient, server, time range, and subject when subject logging
is on), one row per message, then a message's whole history across servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django import forms
from django.db.models import Count, Max, Min
from django.urls import reverse
from django.views.generic import TemplateView

from relay.admin.search import TrackingFilter, message_history
from relay.console.common import when
from relay.queue import prune
from relay.queue.models import Message, TrackingEvent
from relay.queue.tracking import TrackingSettings
from smtpadmin.access import RoleRequiredMixin

RESULT_LIMIT = 100
HISTORY_LIMIT = 1000
DATETIME_WIDGET = {"type": "datetime-local"}


@dataclass
class Found:
    """One message of the search results, summed up from its events."""

    queue_id: str
    first: datetime
    last: datetime
    events: int
    message_id: str = ""
    sender: str = ""
    subject: str = ""
    recipients: list[str] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    outcome: str = ""

    @property
    def url(self) -> str:
        return reverse("relay:message-history") + f"?queue_id={self.queue_id}"


def summaries(events: Any) -> list[Found]:
    """The newest messages among the matching events (one row per queue id), filled from all
    their events: three queries however many there are."""
    groups = list(
        events.exclude(queue_id="")
        .values("queue_id")
        .annotate(first=Min("at"), last=Max("at"), count=Count("pk"))
        .order_by("-last", "queue_id")[:RESULT_LIMIT]
    )
    found = {g["queue_id"]: Found(g["queue_id"], g["first"], g["last"], g["count"]) for g in groups}
    for event in TrackingEvent.objects.filter(queue_id__in=list(found)).order_by("at", "pk"):
        summary = found[event.queue_id]
        summary.message_id = summary.message_id or event.message_id
        summary.sender = summary.sender or event.sender
        summary.subject = summary.subject or event.subject
        if event.recipient and event.recipient not in summary.recipients:
            summary.recipients.append(event.recipient)
        if event.server_name and event.server_name not in summary.servers:
            summary.servers.append(event.server_name)
        summary.outcome = TrackingEvent.Kind(event.kind).label
    return list(found.values())


class TrackingCenter(RoleRequiredMixin, TemplateView):
    template_name = "relay/tracking.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        settings = TrackingSettings.load()
        data = self.request.GET
        submitted = any(v for k, v in data.items() if k != "page") or "find" in data
        search = TrackingFilter(data if submitted else None, queryset=TrackingEvent.objects.all())
        if not settings.subjects:
            # Subjects are logged only while subject logging is on: no field, no search.
            del search.filters["subject"]
        form = search.form
        for name in ("since", "until"):
            widget = form.fields[name].widget
            widget.attrs.update(DATETIME_WIDGET)
            if isinstance(widget, forms.DateTimeInput):
                widget.format = "%Y-%m-%dT%H:%M"
        results: list[Found] = []
        rejected: list[TrackingEvent] = []
        if submitted and search.is_valid():
            results = summaries(search.qs)
            rejected = list(search.qs.filter(queue_id="").order_by("-at", "-pk")[:RESULT_LIMIT])
        return super().get_context_data(
            title="Message Tracking Center",
            nav_key="tracking-center",
            form=form,
            submitted=submitted,
            results=results,
            rejected=rejected,
            limit=RESULT_LIMIT,
            tracking=settings,
            kept=prune.kept_note(prune.retention_days()),
            **kwargs,
        )

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> Any:
        if context["form"].is_bound and context["form"].errors:
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)


class MessageHistory(RoleRequiredMixin, TemplateView):
    """Every event of one message (a queue id, or a Message-ID) on every server, in order."""

    template_name = "relay/history.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        queue_id = self.request.GET.get("queue_id", "").strip()[:20].replace("\x00", "")
        message_id = self.request.GET.get("message_id", "").strip()[:500].replace("\x00", "")
        events = []
        if queue_id or message_id:
            events = list(message_history(queue_id, message_id)[:HISTORY_LIMIT])
        queue_ids = {e.queue_id for e in events if e.queue_id}
        if queue_id:
            queue_ids.add(queue_id.upper())
        stored = dict(Message.objects.filter(queue_id__in=queue_ids).values_list("queue_id", "pk"))
        rows = [
            {
                "at": when(e.at),
                "kind": TrackingEvent.Kind(e.kind).label,
                "server": e.server_name,
                "queue_id": e.queue_id,
                "message_url": reverse("relay:message", args=[stored[e.queue_id]])
                if e.queue_id in stored
                else "",
                "recipient": e.recipient,
                "where": e.queue_name or e.connector_name or e.next_hop or e.virtual_server_name,
                "response": e.response,
                "detail": e.detail,
                "by": e.by,
                "client": e.client_address,
            }
            for e in events
        ]
        first = events[0] if events else None
        return super().get_context_data(
            title=f"Message history {queue_id or message_id}".strip(),
            nav_key="tracking-center",
            queue_id=queue_id,
            message_id=message_id or (first.message_id if first else ""),
            sender=first.sender if first else "",
            rows=rows,
            truncated=len(events) == HISTORY_LIMIT,
            **kwargs,
        )
