"""Content-Security-Policy on every response: scripts and styles from our own origin only, so
an injected script element or event handler attribute never runs, and no site frames us."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

HEADER = "Content-Security-Policy"

POLICY: dict[str, str] = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def render(policy: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in policy.items())


DEFAULT = render(POLICY)
# DRF's browsable API has style attributes and a <style> of its own templates; scripts stay
# strict there too.
BROWSABLE_API = render({**POLICY, "style-src": "'self' 'unsafe-inline'"})


def policy_for(response: HttpResponseBase) -> str:
    renderer = getattr(response, "accepted_renderer", None)
    return BROWSABLE_API if getattr(renderer, "format", "") == "api" else DEFAULT


class ContentSecurityPolicyMiddleware:
    """Adds the policy unless the view set its own header (a page that needs more says so
    itself, in one place)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = policy_for(response)
        return response
