"""Pieces the servers app's console pages share: the tree node a page selects, the status
badges of servers and virtual servers, and safe redirects back to the page a button was on."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

from servers.models import Server, VirtualServer


def server_status(server: Server) -> tuple[str, str]:
    """(badge class, readable text) from the relay worker's heartbeat."""
    status = Server.Status(server.status)
    return status.value, status.label


def virtual_server_status(virtual_server: VirtualServer) -> tuple[str, str]:
    """(badge class, readable text): the actual state, and the wish when it differs."""
    state = VirtualServer.State(virtual_server.state)
    desired = VirtualServer.DesiredState(virtual_server.desired_state)
    if state is VirtualServer.State.DISABLED:
        reason = virtual_server.state_reason
        return state.value, f"disabled: {reason}" if reason else "disabled"
    if state is VirtualServer.State.UNKNOWN:
        return state.value, "not reported"
    if state.value == desired.value:
        return state.value, state.label.lower()
    return state.value, f"{state.label.lower()} → {desired.label.lower()}"


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The page a POST button came from, if it is one of ours."""
    target = str(request.POST.get("next", ""))
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback
