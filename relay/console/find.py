"""Find Messages: search the queues by sender, recipient, domain, subject, state, age, size and
queue, then Freeze, Unfreeze or Delete (with or without NDR) everything found, after a
confirmation page. The filters are the API's (``relay.admin.search.MessageFilter``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.views.generic import TemplateView

from relay.admin import actions, jobs
from relay.admin.paging import capped_count, keyset_page
from relay.admin.search import MessageFilter, MessageState, with_derived_state
from relay.console.common import STATE_BADGES, done, kilobytes, plural, when
from relay.queue.models import Message
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.roles import Role

PAGE_SIZE = 100
# The bulk buttons: (action, ndr, label).
BULK_BUTTONS = [
    ("freeze", False, "Freeze all"),
    ("unfreeze", False, "Unfreeze all"),
    ("delete", True, "Delete all (NDR)"),
    ("delete", False, "Delete all (no NDR)"),
]


def criteria_of(data: QueryDict) -> dict[str, str]:
    """The filter fields of a request, without paging and action fields."""
    names = set(MessageFilter.base_filters)
    return {k: str(v) for k, v in data.items() if k in names and v != ""}


def find(data: QueryDict | dict[str, str]) -> MessageFilter:
    return MessageFilter(data=data, queryset=Message.objects.defer("content"))


class FindMessages(RoleRequiredMixin, TemplateView):
    """A GET form, so a search can be bookmarked; results a page at a time, oldest first,
    each page after the last row of the one before (``after``/``before`` cursors), with the
    count capped at 10,000."""

    template_name = "relay/find.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        submitted = bool(criteria_of(self.request.GET)) or "find" in self.request.GET
        found = find(self.request.GET if submitted else {})
        form = found.form
        page = None
        rows: list[dict[str, Any]] = []
        bulk: list[dict[str, str]] = []
        count = None
        if submitted and found.is_valid():
            count = capped_count(found.qs.values("pk"))
            page = keyset_page(
                found.qs.prefetch_related("recipients", "entries"),
                "received_at",
                size=PAGE_SIZE,
                after=str(self.request.GET.get("after", "")),
                before=str(self.request.GET.get("before", "")),
            )
            rows = [self.row(message) for message in with_derived_state(page.rows)]
            criteria = criteria_of(self.request.GET)
            if self.can_write and criteria and count.value:
                confirm = reverse("relay:bulk-confirm")
                bulk = [
                    {"label": label, "url": f"{confirm}?{urlencode(query)}"}
                    for action, ndr, label in BULK_BUTTONS
                    if (query := {**criteria, "action": action, "ndr": int(ndr)})
                ]
        return super().get_context_data(
            title="Find Messages",
            nav_key="find-messages",
            form=form,
            submitted=submitted,
            page=page,
            count=count,
            rows=rows,
            bulk=bulk,
            **kwargs,
        )

    @staticmethod
    def row(message: Any) -> dict[str, Any]:
        recipients = [r.address for r in message.recipients.all()]
        shown = ", ".join(recipients[:3]) + (
            f" and {len(recipients) - 3} more" if len(recipients) > 3 else ""
        )
        state = MessageState(message.state)
        return {
            "url": reverse("relay:message", args=[message.pk]),
            "queue_id": message.queue_id,
            "sender": message.sender or "<>",
            "recipients": shown,
            "subject": message.subject,
            "size": kilobytes(message.size),
            "received": when(message.received_at),
            "state": state.label,
            "badge": STATE_BADGES.get(state, ""),
        }

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> Any:
        if context["form"].is_bound and context["form"].errors:
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)


class BulkConfirm(RoleRequiredMixin, TemplateView):
    """GET: how many messages the search finds and what will happen to them; POST (with the
    same criteria as hidden fields): do it. Administrators only; the search runs again at
    POST time, so what is changed is what matches then."""

    template_name = "relay/confirm.html"
    read_role = Role.ADMINISTRATOR

    def data(self) -> QueryDict:
        return self.request.POST if self.request.method == "POST" else self.request.GET

    def action(self) -> tuple[str, bool]:
        data = self.data()
        action = str(data.get("action", ""))
        return action, action == "delete" and data.get("ndr") == "1"

    def back(self) -> str:
        return f"{reverse('relay:find-messages')}?{urlencode(criteria_of(self.data()))}"

    def problem(self, found: MessageFilter) -> str:
        action, _ndr = self.action()
        if action not in actions.BULK_ACTIONS:
            return "Choose freeze, unfreeze or delete."
        if not found.is_valid():
            return "The search is not valid; change it on the Find Messages page."
        if not found.criteria:
            return "Give at least one criterion: a bulk action on every message is refused."
        return ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        found = find(criteria_of(self.data()))
        problem = self.problem(found)
        action, ndr = self.action()
        context: dict[str, Any] = {
            "title": "Find Messages: bulk action",
            "nav_key": "find-messages",
            "cancel": self.back(),
            "problem": problem,
        }
        if not problem:
            count = capped_count(found.qs.values("pk"))
            verb = actions.BULK_ACTIONS[action]
            how = ""
            if action == "delete":
                how = " with a non-delivery report (NDR) to each sender" if ndr else " without NDR"
            context.update(
                question=f"{verb} {count} message{'' if count.value == 1 else 's'}{how}?",
                details=[f"Criteria: {found.describe()}."],
                fields={**criteria_of(self.data()), "action": action, "ndr": "1" if ndr else "0"},
                button=f"{verb} {count} message{'' if count.value == 1 else 's'}",
            )
        return super().get_context_data(**context, **kwargs)

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> Any:
        if context["problem"]:
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)

    def post(self, request: HttpRequest) -> HttpResponse:
        found = find(criteria_of(request.POST))
        if self.problem(found):
            return self.render_to_response(self.get_context_data())
        action, ndr = self.action()
        if jobs.many_found(found):
            job = jobs.start(
                action,
                request.user,
                criteria=criteria_of(request.POST),
                ndr=ndr,
                description=found.describe(),
            )
            return redirect(reverse("relay:job", args=[job.pk]))
        outcome = actions.bulk_action(
            found.qs, action, request.user, ndr=ndr, description=found.describe()
        )
        verb = {"freeze": "Froze", "unfreeze": "Unfroze", "delete": "Deleted"}[action]
        text = f"{verb} {plural(outcome.changed, 'message')} of {outcome.matched} found"
        if action == "delete":
            text += f", {plural(outcome.dsns, 'NDR')} sent" if ndr else ", without NDR"
        text += "."
        if outcome.dsn_errors:
            text += f" {plural(outcome.dsn_errors, 'NDR')} could not be sent (see the log)."
        return done(request, text, self.back())
