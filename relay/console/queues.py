"""Queue Viewer: the link queues and the system queues with their state and columns, each
queue's messages, and the queue actions (Freeze, Unfreeze, Force Connection, Delete All
Messages with or without NDR). The work is in ``relay.admin.actions``."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from relay.admin import actions, jobs
from relay.admin.paging import keyset_page
from relay.admin.viewer import (
    OPEN_ENTRY_STATES,
    QueueState,
    ensure_system_queues,
    last_error,
    outbound_disabled,
    queue_list,
    queue_state,
    source,
)
from relay.console.common import STATE_BADGES, done, entry_state, kilobytes, plural, when
from relay.queue import prune
from relay.queue.models import LinkQueue, QueueEntry, Recipient
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action, Column, ObjectList
from smtpadmin.roles import Role

PAGE_SIZE = 100
QUEUE_ACTIONS = {
    "freeze": "Freeze",
    "unfreeze": "Unfreeze",
    "retry": "Force Connection",
}


def queue_actions(queue: Any) -> list[Action]:
    """The buttons of a queue (annotated with its columns), for those who may act: what
    concerns its messages only while it has some."""
    verb = "unfreeze" if queue.frozen else "freeze"
    buttons = [Action(QUEUE_ACTIONS[verb], reverse(f"relay:queue-{verb}", args=[queue.pk]), "post")]
    if queue.message_count:
        delete = reverse("relay:queue-delete", args=[queue.pk])
        buttons += [
            Action("Force Connection", reverse("relay:queue-retry", args=[queue.pk]), "post"),
            Action("Delete all (NDR)…", f"{delete}?ndr=1"),
            Action("Delete all (no NDR)…", f"{delete}?ndr=0"),
        ]
    return buttons


class QueueViewer(ObjectList):
    """Every queue with Queue Viewer's columns. Empty link queues are left out unless asked
    for (system queues are always shown, as in Exchange)."""

    template_name = "relay/queue_viewer.html"
    title = "Queue Viewer"
    nav_key = "queue-viewer"
    empty_text = "There are no queues."
    columns: ClassVar[list[Column]] = [
        Column("Queue", lambda q: q.name, "name", link=True),
        Column("Source", source),
        Column("State", lambda q: QueueState(q.state).label),
        Column("Oldest message", lambda q: when(q.oldest_message_at), "oldest_message_at"),
        Column("Messages", lambda q: q.message_count, "message_count"),
        Column("Total size (KB)", lambda q: kilobytes(q.total_size), "total_size"),
        Column("Next retry", lambda q: when(q.next_retry_at), "next_retry_at"),
        Column("Last error", last_error),
    ]

    @property
    def show_all(self) -> bool:
        return self.request.GET.get("all") == "1"

    def get_queryset(self) -> QuerySet[LinkQueue]:
        ensure_system_queues()
        self.now = timezone.now()
        queues = queue_list(self.now)
        if not self.show_all:
            # Whether a queue holds a message is one index probe; its count is read once.
            holds = Exists(
                QueueEntry.objects.filter(queue=OuterRef("pk"), state__in=OPEN_ENTRY_STATES)
            )
            queues = queues.filter(Q(kind=LinkQueue.Kind.SYSTEM) | Q(frozen=True) | Q(holds))
        return queues

    def sorted_queryset(self) -> tuple[Any, str, str]:
        queryset, sort, direction = super().sorted_queryset()
        disabled = outbound_disabled()
        queues = list(queryset)
        for queue in queues:
            queue.state = queue_state(queue, self.now, disabled=disabled)
        self.queues = queues
        return queues, sort, direction

    def object_url(self, obj: LinkQueue) -> str:
        return reverse("relay:queue", args=[obj.pk])

    def row_actions(self, obj: LinkQueue) -> list[Action]:
        return queue_actions(obj)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        for row, queue in zip(context["rows"], self.queues, strict=True):
            row["badge"] = STATE_BADGES.get(queue.state, "")
            row["state"] = QueueState(queue.state).label
        context.update(
            show_all=self.show_all,
            disabled=outbound_disabled(),
            description="Link queues (one per next hop) and the system queues. "
            "Sizes in KB; times are when the oldest message arrived and when the next "
            "retry is due.",
            kept=prune.kept_note(prune.retention_days()),
        )
        return context


class QueueMixin(RoleRequiredMixin):
    kwargs: dict[str, Any]

    @cached_property
    def queue(self) -> LinkQueue:
        return get_object_or_404(
            LinkQueue.objects.select_related("connector", "server"), pk=self.kwargs["pk"]
        )


class QueueMessages(QueueMixin, TemplateView):
    """One queue: its columns and buttons, then its messages (a page at a time, each after
    the last message of the one before, so the 1,000th page costs what the first does)."""

    template_name = "relay/queue.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        now = timezone.now()
        queue: Any = queue_list(now).get(pk=self.queue.pk)
        state = queue_state(queue, now)
        waiting = (
            Recipient.objects.filter(entry=OuterRef("pk"), state__in=Recipient.OPEN_STATES)
            .order_by()
            .values("entry")
            .annotate(n=Count("pk"))
            .values("n")
        )
        entries = (
            QueueEntry.objects.filter(queue=queue, state__in=OPEN_ENTRY_STATES)
            .select_related("message")
            .defer("message__content")
            .annotate(waiting=Coalesce(Subquery(waiting), 0))
        )
        # In arrival order (queue ids sort by it), a page after the last one shown.
        page = keyset_page(
            entries,
            "message_id",
            size=PAGE_SIZE,
            after=str(self.request.GET.get("after", "")),
            before=str(self.request.GET.get("before", "")),
        )
        rows = [
            {
                "entry": entry,
                "message": entry.message,
                "url": reverse("relay:message", args=[entry.message_id]),
                "state": entry_state(entry, now),
                "received": when(entry.message.received_at),
                "next_attempt": when(entry.next_attempt_at)
                if entry.state == QueueEntry.State.RETRY
                else "",
                "size": kilobytes(entry.message.size),
                "actions": self.message_actions(entry) if self.can_write else [],
            }
            for entry in page.rows
        ]
        summary = [
            ("State", QueueState(state).label),
            ("Source", source(queue)),
            ("Messages", str(queue.message_count)),
            ("Total size (KB)", kilobytes(queue.total_size)),
            ("Oldest message", when(queue.oldest_message_at)),
            ("Next retry", when(queue.next_retry_at)),
            ("Last error", last_error(queue)),
        ]
        if queue.domain:
            summary.insert(2, ("Destination domain", queue.domain))
        if queue.smart_hosts:
            summary.insert(2, ("Smart hosts", queue.smart_hosts))
        return super().get_context_data(
            title=f"Queue {queue.name}",
            nav_key="queue-viewer",
            queue=queue,
            badge=STATE_BADGES.get(state, ""),
            state=QueueState(state).label,
            summary=summary,
            actions=queue_actions(queue) if self.can_write else [],
            find_url=reverse("relay:find-messages") + f"?queue={queue.pk}",
            page=page,
            rows=rows,
            can_write=self.can_write,
            **kwargs,
        )

    @staticmethod
    def message_actions(entry: QueueEntry) -> list[Action]:
        pk = entry.message_id
        verb = "unfreeze" if entry.state == QueueEntry.State.FROZEN else "freeze"
        delete = reverse("relay:message-delete", args=[pk])
        return [
            Action(verb.capitalize(), reverse(f"relay:message-{verb}", args=[pk]), "post"),
            Action("Delete (NDR)…", f"{delete}?ndr=1"),
            Action("Delete (no NDR)…", f"{delete}?ndr=0"),
        ]


class QueueAction(QueueMixin, View):
    """Freeze, Unfreeze or Force Connection (POST only; view-only administrators get 403)."""

    http_method_names = ["post"]
    verb: str = ""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        queue = self.queue
        back = reverse("relay:queue", args=[queue.pk])
        if self.verb == "freeze":
            if actions.freeze_queue(queue, request.user):
                return done(request, f"Froze the queue {queue}.", back)
            return done(request, f"The queue {queue} was frozen already.", back, info=True)
        if self.verb == "unfreeze":
            if actions.unfreeze_queue(queue, request.user):
                return done(request, f"Unfroze the queue {queue}.", back)
            return done(request, f"The queue {queue} was not frozen.", back, info=True)
        if jobs.many_in_queue(queue):
            job = jobs.start("retry", request.user, queue=queue)
            return redirect(reverse("relay:job", args=[job.pk]))
        count = actions.retry_queue_now(queue, request.user)
        return done(
            request,
            f"Forced a connection for {queue}: {plural(count, 'waiting message')} due now.",
            back,
        )


class QueueDelete(QueueMixin, TemplateView):
    """Delete All Messages: GET asks (with how many and whether an NDR goes out), POST does."""

    template_name = "relay/confirm.html"
    read_role = Role.ADMINISTRATOR

    def ndr(self) -> bool:
        data = self.request.POST if self.request.method == "POST" else self.request.GET
        return data.get("ndr") == "1"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        queue = self.queue
        ndr = self.ndr()
        count = QueueEntry.objects.filter(queue=queue, state__in=OPEN_ENTRY_STATES).count()
        how = "with a non-delivery report (NDR) to each sender" if ndr else "without NDR"
        return super().get_context_data(
            title=f"Delete all messages in {queue}",
            nav_key="queue-viewer",
            question=f"Delete all {plural(count, 'message')} in the queue “{queue}” {how}?",
            details=[
                "Recipients still waiting in this queue are marked deleted; those of the same "
                "messages in other queues are not touched.",
                "Freezing the queue first stops deliveries that are about to start.",
            ],
            fields={"ndr": "1" if ndr else "0"},
            button="Delete all",
            cancel=reverse("relay:queue", args=[queue.pk]),
            **kwargs,
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        queue = self.queue
        ndr = self.ndr()
        if jobs.many_in_queue(queue):
            job = jobs.start("delete", request.user, queue=queue, ndr=ndr)
            return redirect(reverse("relay:job", args=[job.pk]))
        result = actions.delete_queue_messages(queue, request.user, ndr)
        text = f"Deleted {plural(result.messages, 'message')} from {queue}"
        text += f" and sent {plural(len(result.dsns), 'NDR')}." if ndr else " without NDR."
        if result.dsn_errors:
            text += f" {plural(result.dsn_errors, 'NDR')} could not be sent (see the log)."
        return done(request, text, reverse("relay:queue", args=[queue.pk]))
