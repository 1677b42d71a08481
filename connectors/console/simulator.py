"""The Routing Simulator: where would mail from S to R go, and why, step by step.

It calls the routing function the relay's intake calls (``resolve`` over ``build_topology``),
so what it explains is what the relay does."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.views.generic import TemplateView

from connectors.forms import SimulatorForm
from connectors.routing import Route, resolve
from connectors.snapshot import MessageFacts
from connectors.topology import shared_topologies
from smtpadmin.access import RoleRequiredMixin

KIND_LABELS = {
    "local": "Local delivery",
    "connector": "Connector",
    "smart_host": "Smart host of the virtual server",
    "dns": "DNS (MX of the domain)",
    "unreachable": "Unreachable",
    "reject": "Rejected",
}


def route_rows(route: Route) -> list[dict[str, str]]:
    """The route's summary as (label, text, link) rows for the page."""
    rows = [{"label": "Route", "text": KIND_LABELS.get(route.kind, route.kind)}]
    if route.accepted_domain is not None:
        kind = route.accepted_domain.type.replace("_", " ")
        rows.append(
            {"label": "Accepted domain", "text": f"{route.accepted_domain.pattern} ({kind})"}
        )
    if route.connector is not None:
        rows.append(
            {
                "label": "Connector",
                "text": route.connector.name,
                "url": reverse("connectors:connector", args=[route.connector.id]),
            }
        )
    if route.address_space is not None:
        space = route.address_space
        rows.append({"label": "Address space", "text": f"{space.pattern} (cost {space.cost})"})
    if route.bridgehead is not None:
        rows.append(
            {"label": "Bridgehead", "text": route.bridgehead.name or route.bridgehead.label}
        )
    if route.next_hops:
        rows.append({"label": "Next hop", "text": "; ".join(route.next_hops)})
    queued = f"yes: {route.queued_reason}" if route.queued else "no"
    rows.append({"label": "Queued", "text": queued})
    if route.status:
        rows.append({"label": "Status", "text": route.status})
    rows.append({"label": "Why", "text": route.reason})
    return rows


class RoutingSimulator(RoleRequiredMixin, TemplateView):
    """A GET form, so a result can be bookmarked or sent to a colleague."""

    template_name = "connectors/simulator.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        submitted = "recipient" in self.request.GET
        form = SimulatorForm(self.request.GET if submitted else None)
        route = None
        if submitted and form.is_valid():
            data = form.cleaned_data
            topology = shared_topologies.topology(data["virtual_server"])
            message = MessageFacts(
                size=(data["size_kb"] or 0) * 1024,
                priority=data["priority"],
                system=data["system"],
            )
            route = resolve(data["recipient"], data["sender"], message, topology)
        return super().get_context_data(
            title="Routing Simulator",
            nav_key="routing-simulator",
            form=form,
            route=route,
            summary=route_rows(route) if route else [],
            steps=route.steps if route else [],
            **kwargs,
        )

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> Any:
        form = context["form"]
        if form.is_bound and form.errors:
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)
