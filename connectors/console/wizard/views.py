"""Walking the steps, and the view: one URL, the answers kept in the session."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from django.views.generic import TemplateView

from connectors.console.wizard.choices import Choices
from connectors.console.wizard.plan import notes
from connectors.console.wizard.steps import STEPS, ServerStep, Step, StepForm, SummaryStep
from servers.models import VirtualServer
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.navigation import Node
from smtpadmin.roles import Role

NAV_KEY = "internet-mail-wizard"
SESSION_KEY = "internet_mail_wizard"
DONE_KEY = "internet_mail_wizard_done"

logger = logging.getLogger(__name__)


# --- walking the steps ----------------------------------------------------------------------

Answers = dict[str, dict[str, list[str]]]


@dataclass
class StepState:
    step: Step
    form: StepForm
    choices: Choices  # the answers of the steps before this one
    done: bool


def walk(answers: Answers) -> list[StepState]:
    """The steps that apply, in order, each bound to its saved answers and validated against
    the steps before it. The walk stops at the first step without a (valid) answer."""
    choices = Choices()
    states = []
    for step in STEPS:
        if not step.applies(choices):
            continue
        data = answers.get(step.key)
        before = replace(choices)
        form = step.form(MultiValueDict(data) if data is not None else None, choices=before)
        done = data is not None and form.is_valid()
        states.append(StepState(step, form, before, done))
        if not done:
            break
        form.contribute(choices)
    return states


def wizard_nodes(user: Any) -> list[Node]:
    url = reverse("connectors:internet-mail-wizard")
    return [Node(NAV_KEY, "Internet Mail Wizard", url, icon="wizard", min_role=Role.ADMINISTRATOR)]


class InternetMailWizard(RoleRequiredMixin, TemplateView):
    """One URL; the step shown is the session's, or ``?step=`` for one already reached."""

    read_role = Role.ADMINISTRATOR
    write_role = Role.ADMINISTRATOR
    template_name = "connectors/wizard.html"

    # --- session ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        stored = self.request.session.get(SESSION_KEY)
        return stored if isinstance(stored, dict) else {"step": "server", "answers": {}}

    def save_state(self, state: dict[str, Any]) -> None:
        self.request.session[SESSION_KEY] = state

    def url(self) -> str:
        return reverse("connectors:internet-mail-wizard")

    # --- GET -------------------------------------------------------------------------------
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if "restart" in request.GET:
            request.session.pop(SESSION_KEY, None)
            return redirect(self.url())
        done = request.session.pop(DONE_KEY, None)
        if done is not None:
            return self.render_done(done)
        state = self.state()
        states = walk(state["answers"])
        if request.GET.get("server", "").isdigit():
            # htmx asks for the virtual servers of the server just chosen.
            form = ServerStep(initial={"server": request.GET["server"]}, choices=Choices())
            states[0] = replace(states[0], form=form)
            return self.render_step(states, 0)
        wanted = request.GET.get("step") or state["step"]
        index = next((i for i, s in enumerate(states) if s.step.key == wanted), len(states) - 1)
        return self.render_step(states, index)

    def steps(self, states: list[StepState], current: str) -> tuple[list[dict[str, Any]], int]:
        """The steps that apply (links to those reached) and the current one's number."""
        latest = replace(states[-1].choices)
        if states[-1].done:
            states[-1].form.contribute(latest)
        keys = [s.key for s in STEPS if s.applies(latest)]
        reached = {s.step.key for s in states}
        steps = [
            {
                "title": step.form.title,
                "url": f"?step={step.key}" if step.key in reached else "",
                "current": step.key == current,
            }
            for step in STEPS
            if step.key in keys
        ]
        return steps, keys.index(current) + 1

    def render_step(
        self, states: list[StepState], index: int, status: int = 200, **extra: Any
    ) -> HttpResponse:
        current = states[index]
        steps, number = self.steps(states, current.step.key)
        context = self.get_context_data(
            title="Internet Mail Wizard",
            nav_key=NAV_KEY,
            steps=steps,
            number=number,
            step_key=current.step.key,
            form=current.form,
            plan=getattr(current.form, "plan", None),
            notes=notes(current.choices) if current.step.key != "server" else [],
            **extra,
        )
        return self.render_to_response(context, status=status)

    def render_refused(self, states: list[StepState]) -> HttpResponse:
        """A step is no longer valid at Finish: the summary page says which and why."""
        failing = states[-1]
        labels = {name: f.label or name for name, f in failing.form.fields.items()}
        problems = [
            f"{labels[name]}: {error}" if name in labels else error
            for name, errors in failing.form.errors.items()
            for error in errors
        ]
        steps, _number = self.steps(states, failing.step.key)
        for step in steps:
            step["current"] = step["title"] == SummaryStep.title
        context = self.get_context_data(
            title="Internet Mail Wizard",
            nav_key=NAV_KEY,
            steps=steps,
            number=len(steps),
            step_key="summary",
            step_title=SummaryStep.title,
            form=None,
            plan=None,
            notes=[],
            refused=problems,
            refused_step=failing.step.form.title,
            refused_url=f"?step={failing.step.key}",
        )
        return self.render_to_response(context, status=400)

    def render_done(self, done: dict[str, Any]) -> HttpResponse:
        context = self.get_context_data(title="Internet Mail Wizard", nav_key=NAV_KEY, **done)
        return self.response_class(
            request=self.request, template="connectors/wizard_done.html", context=context
        )

    # --- POST ------------------------------------------------------------------------------
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        action = request.POST.get("wizard_action", "next")
        if action == "cancel":
            request.session.pop(SESSION_KEY, None)
            messages.info(request, "The Internet Mail Wizard was cancelled; nothing was changed.")
            return redirect(reverse("smtpadmin:organization"))
        state = self.state()
        if action == "finish":
            return self.finish(state)
        states = walk(state["answers"])
        key = request.POST.get("step", "")
        index = next((i for i, s in enumerate(states) if s.step.key == key), None)
        if index is None:
            messages.warning(request, "Finish the earlier steps of the wizard first.")
            return redirect(self.url())
        current = states[index]
        form = current.step.form(request.POST, choices=current.choices)
        valid = form.is_valid()
        if valid and key != "summary":  # the summary is confirmed by Finish, never saved
            state["answers"][key] = {
                name: request.POST.getlist(name) for name in form.fields if name in request.POST
            }
        if action == "back":
            state["step"] = states[max(index - 1, 0)].step.key
        elif not valid:
            states[index] = replace(current, form=form)
            return self.render_step(states, index, status=400)
        else:
            following = walk(state["answers"])
            state["step"] = following[min(index + 1, len(following) - 1)].step.key
        self.save_state(state)
        return redirect(self.url())

    def finish(self, state: dict[str, Any]) -> HttpResponse:
        request = self.request
        posted = request.POST.get("plan_digest", "")
        try:
            with transaction.atomic():
                # Lock the virtual server first: its relay settings must not change between
                # this last check and the changes made from it.
                vs_pk = state["answers"].get("server", {}).get("virtual_server", [""])[-1]
                if str(vs_pk).isdigit():
                    list(VirtualServer.objects.select_for_update().filter(pk=vs_pk))
                states = walk(state["answers"])
                last = states[-1]
                if last.step.key != "summary":
                    if not last.form.is_bound:  # the answers are gone (a new session)
                        messages.warning(request, "The wizard's answers are gone; start again.")
                        return redirect(self.url())
                    return self.render_refused(states)
                assert isinstance(last.form, SummaryStep)
                if last.form.plan.digest != posted:
                    return self.render_step(states, len(states) - 1, status=409, changed=True)
                done = last.form.plan.apply(request.user)
        except (IntegrityError, ValidationError) as exc:
            # Something changed between the checks and the writes; the transaction is undone.
            states = walk(state["answers"])
            if states[-1].step.key != "summary":
                return self.render_refused(states)
            if isinstance(exc, ValidationError):
                why = "; ".join(exc.messages)
            else:
                logger.warning("Internet Mail Wizard: conflict at finish: %s", exc)
                why = "Another change to the same objects was saved meanwhile; check and retry."
            return self.render_step(states, len(states) - 1, status=409, failure=why)
        vs = last.form.plan.vs
        request.session.pop(SESSION_KEY, None)
        request.session[DONE_KEY] = {
            "done": done,
            "receives": last.choices.receives,
            "domains": last.choices.domains,
            "fqdn": "" if vs.effective_fqdn == "localhost" else vs.effective_fqdn,
            "vs_name": str(vs),
            "vs_url": reverse("servers:virtual-server", args=[vs.pk]),
        }
        return redirect(self.url())
