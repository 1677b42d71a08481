"""A message's properties (envelope, headers, size, submission and expiry time, each
recipient's state and last response, its queues), its .eml, and Freeze, Unfreeze and Delete
with or without NDR."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from relay.admin import actions
from relay.admin.search import MessageState, with_state
from relay.admin.viewer import OPEN_ENTRY_STATES, message_headers
from relay.console.common import STATE_BADGES, done, entry_state, kilobytes, plural, when
from relay.queue.models import Message, QueueEntry, Recipient
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action
from smtpadmin.roles import Role

MESSAGE_ACTIONS = {"freeze": "Freeze", "unfreeze": "Unfreeze"}


class MessageMixin(RoleRequiredMixin):
    kwargs: dict[str, Any]

    @cached_property
    def message(self) -> Any:  # a Message annotated with its state
        return get_object_or_404(
            with_state(Message.objects.select_related("virtual_server__server")),
            pk=self.kwargs["pk"],
        )


def message_actions(message: Any) -> list[Action]:
    pk = message.pk
    delete = reverse("relay:message-delete", args=[pk])
    buttons = []
    if message.state == MessageState.FROZEN:
        buttons.append(Action("Unfreeze", reverse("relay:message-unfreeze", args=[pk]), "post"))
    elif message.state in (MessageState.READY, MessageState.RETRY, MessageState.ACTIVE):
        buttons.append(Action("Freeze", reverse("relay:message-freeze", args=[pk]), "post"))
    if message.state in (
        MessageState.READY,
        MessageState.RETRY,
        MessageState.ACTIVE,
        MessageState.FROZEN,
    ):
        buttons += [
            Action("Delete (NDR)…", f"{delete}?ndr=1"),
            Action("Delete (no NDR)…", f"{delete}?ndr=0"),
        ]
    return buttons


class MessageProperties(MessageMixin, TemplateView):
    template_name = "relay/message.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        now = timezone.now()
        message = self.message
        entries = list(
            QueueEntry.objects.filter(message=message).select_related("queue").order_by("pk")
        )
        queue_of = {e.pk: e.queue for e in entries}
        waiting = [e.expires_at for e in entries if e.state in OPEN_ENTRY_STATES]
        vs = message.virtual_server
        general = [
            ("Queue ID", message.queue_id),
            ("Message-ID", message.message_id),
            ("From (envelope)", message.sender or "<> (null sender)"),
            ("Subject", message.subject),
            ("Size", f"{message.size:,} bytes ({kilobytes(message.size)} KB)"),
            ("Submitted", when(message.received_at)),
            ("Expires", when(min(waiting)) if waiting else ""),
            ("Priority", message.get_priority_display()),
            ("System message (DSN)", "yes" if message.system else "no"),
            ("Received by", f"{vs} on {vs.server}" if vs else ""),
            ("Client", f"{message.client_address} ({message.client_name or 'no rDNS'})"),
            ("HELO", message.helo),
            ("Authenticated user", message.auth_user),
            ("Protocol", message.protocol),
        ]
        recipients = [
            {
                "address": r.address,
                "state": Recipient.State(r.state).label,
                "status": r.status,
                "last_response": r.last_response,
                "queue": queue_of.get(r.entry_id or 0),
                "completed": when(r.completed_at),
            }
            for r in message.recipients.order_by("pk")
        ]
        queues = [
            {
                "queue": e.queue,
                "url": reverse("relay:queue", args=[e.queue_id]),
                "state": entry_state(e, now),
                "attempts": e.attempts,
                "next_attempt": when(e.next_attempt_at) if e.state in OPEN_ENTRY_STATES else "",
                "expires": when(e.expires_at),
                "last_response": e.last_response,
            }
            for e in entries
        ]
        state = MessageState(message.state)
        return super().get_context_data(
            title=f"Message {message.queue_id}",
            nav_key="queue-viewer",
            message=message,
            state=state.label,
            badge=STATE_BADGES.get(state, ""),
            general=general,
            recipients=recipients,
            queues=queues,
            headers=message_headers(message.raw),
            actions=message_actions(message) if self.can_write else [],
            download_url=reverse("relay:message-eml", args=[message.pk]),
            history_url=reverse("relay:message-history") + f"?queue_id={message.queue_id}",
            **kwargs,
        )


class MessageDownload(MessageMixin, View):
    """The message as stored (with our Received header), as a .eml file."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        message = self.message
        response = HttpResponse(message.raw, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{message.queue_id}.eml"'
        return response


class MessageAction(MessageMixin, View):
    """Freeze or Unfreeze (POST only)."""

    http_method_names = ["post"]
    verb: str = ""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        message = self.message
        back = reverse("relay:message", args=[message.pk])
        if self.verb == "freeze":
            count = actions.freeze_message(message, request.user)
            if count:
                return done(request, f"Froze {message} in {plural(count, 'queue')}.", back)
            return done(request, f"{message} is not waiting in any queue.", back, info=True)
        count = actions.unfreeze_message(message, request.user)
        if count:
            return done(request, f"Unfroze {message} in {plural(count, 'queue')}.", back)
        return done(request, f"{message} was not frozen.", back, info=True)


class MessageDelete(MessageMixin, TemplateView):
    """Delete a message from every queue: GET asks, POST does."""

    template_name = "relay/confirm.html"
    read_role = Role.ADMINISTRATOR

    def ndr(self) -> bool:
        data = self.request.POST if self.request.method == "POST" else self.request.GET
        return data.get("ndr") == "1"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        message = self.message
        ndr = self.ndr()
        waiting = list(
            message.recipients.filter(state__in=Recipient.OPEN_STATES).values_list(
                "address", flat=True
            )
        )
        how = "with a non-delivery report (NDR) to the sender" if ndr else "without NDR"
        return super().get_context_data(
            title=f"Delete message {message}",
            nav_key="queue-viewer",
            question=f"Delete the message {message} from {message.sender or '<>'} {how}?",
            details=[f"Recipients still waiting: {', '.join(waiting) or 'none'}."],
            fields={"ndr": "1" if ndr else "0"},
            button="Delete",
            cancel=reverse("relay:message", args=[message.pk]),
            **kwargs,
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        message = self.message
        ndr = self.ndr()
        result = actions.delete_message(message, request.user, ndr)
        back = reverse("relay:message", args=[message.pk])
        if not result.recipients:
            return done(request, f"{message} had no recipient waiting.", back, info=True)
        text = f"Deleted {message} for {plural(result.recipients, 'recipient')}"
        text += " and sent an NDR." if ndr and result.dsns else "."
        if result.dsn_errors:
            text += " The NDR could not be sent (see the log)."
        return done(request, text, back)
