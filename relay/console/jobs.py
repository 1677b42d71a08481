"""Bulk jobs in the console: a job's progress (the bar refreshes itself with htmx every few
seconds while the job runs; without JavaScript the page's Refresh does the same), the recent
jobs, and Resume for a job whose worker died or whose task the broker lost."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.template.loader import get_template
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views import View
from django.views.generic import TemplateView

from relay.admin import jobs
from relay.console.common import done, plural
from relay.queue.models import BulkJob
from smtpadmin.access import RoleRequiredMixin

REFRESH_SECONDS = 2
RECENT = 50


def is_refresh(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def summary(job: BulkJob) -> str:
    """What the job did so far, in words."""
    total = "counting…" if job.total is None else f"{job.total:,}"
    text = f"{job.done:,} of {total} messages looked at, {plural(job.changed, 'message')} changed"
    if job.action == BulkJob.Action.DELETE:
        text += f", {plural(job.recipients, 'recipient')} deleted"
        if job.ndr:
            text += f", {plural(job.dsns, 'NDR')} sent"
    if job.dsn_errors:
        text += f", {plural(job.dsn_errors, 'NDR')} could not be sent (see the log)"
    return text + "."


class JobPage(RoleRequiredMixin, TemplateView):
    """One job: what it does, its progress; Resume while it is unfinished."""

    template_name = "relay/job.html"
    partial_template_name = "relay/job_progress.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if is_refresh(request) and not request.user.is_authenticated:
            # The login expired: the whole page goes to the login form, not into the bar.
            response = redirect_to_login(request.get_full_path())
            return HttpResponse(status=204, headers={"HX-Redirect": response["Location"]})
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def job(self) -> BulkJob:
        return get_object_or_404(BulkJob.objects.select_related("queue"), pk=self.kwargs["pk"])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        job = self.job
        back = (
            reverse("relay:queue", args=[job.queue_id])
            if job.queue_id
            else reverse("relay:find-messages")
        )
        return super().get_context_data(
            title=f"Job {job.pk}: {job.get_action_display()}" + (" with NDR" if job.ndr else ""),
            nav_key="bulk-jobs",
            job=job,
            summary=summary(job),
            refresh_seconds=REFRESH_SECONDS,
            resume_url=reverse("relay:job-resume", args=[job.pk])
            if self.can_write and job.state != BulkJob.State.DONE
            else "",
            can_write=self.can_write,
            back=back,
            **kwargs,
        )

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        request = self.request
        if is_refresh(request):
            html = get_template(self.partial_template_name).render(
                {**context, "request": request, "csrf_token": get_token(request)}
            )
            response: HttpResponse = HttpResponse(html)
        else:
            response = super().render_to_response(context, **kwargs)
        patch_vary_headers(response, ["HX-Request"])
        return response


class JobList(RoleRequiredMixin, TemplateView):
    """The latest jobs, newest first."""

    template_name = "relay/jobs.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        recent = BulkJob.objects.select_related("queue").order_by("-created_at", "-pk")[:RECENT]
        rows = [
            {
                "job": job,
                "url": reverse("relay:job", args=[job.pk]),
                "summary": summary(job),
            }
            for job in recent
        ]
        return super().get_context_data(title="Bulk Jobs", nav_key="bulk-jobs", rows=rows, **kwargs)


class JobResume(RoleRequiredMixin, View):
    """POST: publish an unfinished job again; it goes on after the last batch done."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(BulkJob, pk=pk)
        back = reverse("relay:job", args=[job.pk])
        if jobs.resume(job):
            return done(request, f"Job {job.pk} resumes where it stopped.", back)
        return done(request, f"Job {job.pk} is done already.", back, info=True)
