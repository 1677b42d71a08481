"""The Dashboard, the page the console opens on: mail flow and queue depth per minute over the
last 1, 6 or 24 hours, the largest link queues with their last error, the servers and virtual
servers with their state and heartbeat, and the oldest message waiting. Every figure links to
Queue Viewer or the Message Tracking Center filtered to it.

The figures are a fragment of their own that htmx reloads every
``SMTPADMIN_DASHBOARD_REFRESH_SECONDS``; without JavaScript the page is the same, with a
Refresh link. (URL namespace "dashboard", mounted at the console's root.)"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.generic import TemplateView

from relay import dashboard
from relay.dashboard import Flow, Window
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.navigation import navigation

TRACKING_TIME = "%Y-%m-%dT%H:%M"  # what the Tracking Center's From field shows and reads


def tracking_url(**filters: str) -> str:
    return reverse("relay:tracking-center") + "?" + urlencode(filters)


def since(window: Window, now: datetime) -> str:
    """The start of the window (its first minute), in the console's time zone."""
    start = now - timedelta(minutes=window.minutes - 1)
    return timezone.localtime(start).replace(second=0, microsecond=0).strftime(TRACKING_TIME)


def duration(age: timedelta | None) -> str:
    """A short age: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if age is None:
        return ""
    seconds = max(int(age.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def figures(window: Window) -> dict[str, Any]:
    """Everything the figures fragment shows, with the links of each figure."""
    now = timezone.now()
    moment = now.timestamp()
    start = since(window, now)
    flows = dashboard.flow_series(window, moment)
    legend = [
        {
            "series": series,
            "url": tracking_url(kind=Flow(series.key).value, since=start),
        }
        for series in flows
    ]
    depth = dashboard.depth_series(window, moment)
    destinations = [
        {
            "row": row,
            "url": reverse("relay:queue", args=[row.queue_id]),
            "find_url": reverse("relay:find-messages") + "?" + urlencode({"queue": row.queue_id}),
        }
        for row in dashboard.top_destinations(now=now)
    ]
    oldest = dashboard.oldest_waiting(now)
    servers, more_servers = dashboard.server_states(now=now)
    return {
        "window": window,
        "windows": [
            {"window": w, "url": "?" + urlencode({"hours": w.value}), "current": w is window}
            for w in Window
        ],
        "flow_chart": dashboard.chart("Messages per minute", flows),
        "legend": legend,
        "depth_chart": dashboard.chart("Queue depth", [depth]),
        "depth": depth,
        "queue_viewer_url": reverse("relay:queue-viewer"),
        "destinations": destinations,
        "oldest": oldest,
        "oldest_age": duration(oldest.age) if oldest else "",
        "oldest_url": reverse("relay:message", args=[oldest.message_pk]) if oldest else "",
        "oldest_history_url": (
            reverse("relay:message-history") + "?" + urlencode({"queue_id": oldest.queue_id})
            if oldest
            else ""
        ),
        "oldest_queue_url": reverse("relay:queue", args=[oldest.queue_pk]) if oldest else "",
        "servers": [
            {
                "server": server,
                "url": reverse("servers:server", args=[server.pk]),
                "tracking_url": tracking_url(server=server.name, since=start),
                "heartbeat": duration(server.heartbeat_age),
                "virtual_servers": [
                    {"vs": vs, "url": reverse("servers:virtual-server", args=[vs.pk])}
                    for vs in server.virtual_servers
                ],
            }
            for server in servers
        ],
        "more_servers": more_servers,
        "server_list_url": reverse("servers:server-list"),
        "refresh_seconds": dashboard.refresh_seconds(),
        "figures_url": reverse("dashboard:figures") + "?" + urlencode({"hours": window.value}),
        "page_url": reverse("dashboard:page") + "?" + urlencode({"hours": window.value}),
        "heartbeat_timeout": settings.SMTPADMIN_HEARTBEAT_TIMEOUT,
    }


class Dashboard(RoleRequiredMixin, TemplateView):
    template_name = "relay/dashboard.html"
    http_method_names = ["get", "head", "options"]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        window = Window.parse(self.request.GET.get("hours", ""))
        return super().get_context_data(
            title="Dashboard", nav_key="dashboard", **figures(window), **kwargs
        )


class DashboardFigures(Dashboard):
    """The figures alone, for htmx's refresh (no console tree to build every time)."""

    template_name = "relay/dashboard_figures.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.headers.get("HX-Request") == "true" and not request.user.is_authenticated:
            # The login expired: send the whole window to the login form, not into the pane.
            login = redirect_to_login(reverse("dashboard:page"))
            return HttpResponse(status=204, headers={"HX-Redirect": login["Location"]})
        return super().dispatch(request, *args, **kwargs)

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().render_to_response(context, **kwargs)
        patch_cache_control(response, no_store=True)
        return response


navigation.link_section("dashboard", lambda: reverse("dashboard:page"))

app_name = "dashboard"
urlpatterns = [
    path("", Dashboard.as_view(), name="page"),
    path("dashboard/figures/", DashboardFigures.as_view(), name="figures"),
]
