"""The role matrix, generated from the URL configuration: every console page and API endpoint
x every caller (anonymous, no role, View Only Administrator, Administrator, Full
Administrator) x every method.

The URLs come from walking ``get_resolver().url_patterns``; their ids are filled with real
objects of a world that has a row of every model. ``RULES`` says, per URL key (``namespace:name``
for console pages, ``api:name`` for the API, ``api:<route>`` for API routes without a name),
which role may read and which may write. A URL no rule covers fails the test, naming the URL:
a new endpoint must be given its expectation here.

Expected outcomes per cell:

* anonymous: a console page redirects to the login page; the API answers 401;
* a role below the rule's read role: 403 for every method;
* below the write role: GET, HEAD and OPTIONS as for a reader, every other method 403;
* allowed: a method the view has answers neither 401, 403, 404 nor 405 (the body is empty, so
  a form or serializer may well answer 400 or show its errors), a method it lacks answers 405;
* never a 5xx.

Every cell runs in a savepoint that is rolled back, so a write that succeeds (a delete, say)
leaves the world as it was for the next cell. This complements test_api_permissions.py, which
checks that each allowed API write really succeeds with a valid payload.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import models, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from connectors.models import AddressSpace, Connector
from relay.models import LinkQueue, Message, ReplyRule, TrackingEvent
from relay.queue.models import BulkJob
from servers.models import (
    AcceptedDomain,
    Certificate,
    Mailbox,
    RoutingGroup,
    Server,
    SmtpCredential,
    SmtpSession,
    VirtualServer,
)
from smtpadmin.models import AuditEntry, LoginThrottle, Organization
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.smtpadmin.test_api_permissions import (
    make_certificate,
    make_connector,
    make_credential,
    make_domain,
    make_mailbox,
    make_queued_message,
    make_server,
    make_session,
    make_user,
    make_virtual_server,
)

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
READS = ("GET", "HEAD", "OPTIONS")
CALLERS: dict[str, Role | None] = {
    "anonymous": None,
    "no role": Role.NONE,
    "view only": Role.VIEW_ONLY,
    "administrator": Role.ADMINISTRATOR,
    "full administrator": Role.FULL,
}


@dataclass(frozen=True)
class Rule:
    """Who may read (GET, HEAD, OPTIONS) and who may write (every other method)."""

    read: Role = Role.VIEW_ONLY
    write: Role = Role.ADMINISTRATOR


CONFIGURE = Rule()  # read: any role; change: Administrator
ADMINISTRATORS = Rule(read=Role.ADMINISTRATOR)  # pages that exist only to make a change
FULL_ONLY = Rule(read=Role.FULL, write=Role.FULL)  # users and roles in the console
USERS_API = Rule(write=Role.FULL)  # the API lists users to every role; changes: Full only
# Nobody writes the API's audit log: every reader is told the method does not exist (405).
NO_WRITES = Rule(write=Role.VIEW_ONLY)

# URL key (an fnmatch pattern) -> rule; the first match wins. Keys are listed one by one, so
# that a new URL fails until someone decides who may use it.
RULES: list[tuple[str, Rule]] = [
    # Unlocking a user or an SMTP credential is a Full Administrator's, like users and roles.
    ("admin_pages:user-unlock", FULL_ONLY),
    ("*unlock*", Rule(write=Role.FULL)),
    ("admin_pages:users", FULL_ONLY),
    ("admin_pages:user", FULL_ONLY),
    ("admin_pages:user-new", FULL_ONLY),
    ("admin_pages:user-delete", FULL_ONLY),
    ("admin_pages:config-import", FULL_ONLY),
    ("api:user-list", USERS_API),
    ("api:user-detail", USERS_API),
    ("api:audit-log-list", NO_WRITES),
    ("api:audit-log-detail", NO_WRITES),
    # Forms and confirmations a View Only Administrator could never submit.
    *(
        (key, ADMINISTRATORS)
        for key in (
            "connectors:connector-new",
            "connectors:group-connector-new",
            "connectors:routing-group-new",
            "connectors:internet-mail-wizard",
            "relay:reply-rule-new",
            "relay:queue-delete",
            "relay:message-delete",
            "relay:bulk-confirm",
        )
    ),
    # Every role reads; Administrators and Full Administrators change.
    *(
        (key, CONFIGURE)
        for key in (
            # the console
            "dashboard:page",
            "dashboard:figures",
            "smtpadmin:organization",
            "smtpadmin:tree-children",
            "smtpadmin:picker",
            "admin_pages:audit-log",
            "admin_pages:config-export",
            "servers:server-list",
            "servers:server-new",
            "servers:server",
            "servers:server-delete",
            "servers:protocols",
            "servers:smtp",
            "servers:smtp-new",
            "servers:virtual-server",
            "servers:virtual-server-delete",
            "servers:virtual-server-start",
            "servers:virtual-server-stop",
            "servers:virtual-server-pause",
            "servers:sessions",
            "servers:session-terminate",
            "servers:sessions-terminate-all",
            "servers:accepted-domain-list",
            "servers:accepted-domain-new",
            "servers:accepted-domain",
            "servers:accepted-domain-delete",
            "servers:mailbox-list",
            "servers:mailbox-new",
            "servers:mailbox",
            "servers:mailbox-delete",
            "servers:smtp-credential-list",
            "servers:smtp-credential-new",
            "servers:smtp-credential",
            "servers:smtp-credential-delete",
            "servers:certificate-list",
            "servers:certificate-upload",
            "servers:certificate-generate",
            "servers:certificate",
            "servers:certificate-delete",
            "connectors:connectors",
            "connectors:connector",
            "connectors:connector-delete",
            "connectors:routing-groups",
            "connectors:routing-group",
            "connectors:routing-group-delete",
            "connectors:group-connectors",
            "connectors:simulator",
            "relay:queue-viewer",
            "relay:queue",
            "relay:queue-freeze",
            "relay:queue-unfreeze",
            "relay:queue-retry",
            "relay:message",
            "relay:message-eml",
            "relay:message-freeze",
            "relay:message-unfreeze",
            "relay:find-messages",
            "relay:reply-rules",
            "relay:reply-rule",
            "relay:reply-rule-delete",
            "relay:tracking-center",
            "relay:message-history",
            "relay:jobs",
            "relay:job",
            "relay:job-resume",
            # the API (the router's routes without a trailing slash are keyed by their route)
            "api:api-root",
            "api:organization",
            "api:config-export",
            "api:routing-resolve",
            "api:routinggroup-*",
            "api:server-*",
            "api:virtualserver-*",
            "api:virtual-server-sessions-*",
            "api:virtual-servers/<virtual_server_id>/sessions*",
            "api:accepteddomain-*",
            "api:mailbox-*",
            "api:smtpcredential-*",
            "api:certificate-*",
            "api:connector-*",
            "api:queue-*",
            "api:queues/<pk>/*",
            "api:message-*",
            "api:messages/*",
            "api:tracking-event-*",
            "api:bulk-job-*",
        )
    ),
]

# Public or special URLs, outside the matrix (each is tested for what it is elsewhere or below).
EXCEPTIONS = {
    "smtpadmin:login": "the login form: public by nature (throttled; test_console_core.py)",
    "smtpadmin:logout": "logging out: anyone, POST only (test_console_core.py)",
    "api:auth-token": "obtaining a token with a password: public (test_api_auth.py)",
    "schema": "the OpenAPI description: public, it has no data (test_schema.py)",
    "swagger-ui": "Swagger UI, a static page reading /api/schema/ (test_web_hardening.py)",
    "api:not-found": "a path no resource has: a JSON 404 for anyone (test_api_strict_input.py)",
    "metrics": "Prometheus: any role's token or session, the scrape token, allowed addresses "
    "(401 for the rest; test_metrics.py)",
}
# Static files are served by WhiteNoise before URL resolution and never reach the URLconf.

# The collection before an id in a URL -> the model whose id goes there.
COLLECTIONS: dict[str, type[models.Model]] = {
    "servers": Server,
    "virtual-servers": VirtualServer,
    "sessions": SmtpSession,
    "accepted-domains": AcceptedDomain,
    "mailboxes": Mailbox,
    "smtp-credentials": SmtpCredential,
    "certificates": Certificate,
    "connectors": Connector,
    "routing-groups": RoutingGroup,
    "queues": LinkQueue,
    "messages": Message,
    "reply-rules": ReplyRule,
    "tracking-events": TrackingEvent,
    "jobs": BulkJob,
    "audit-log": AuditEntry,
    "users": User,
}
# Route parts that are not ids -> what to put there.
NAMED_PARTS = {"key": "servers", "picker": "servers"}  # a tree branch's key, a picker's
# Query strings an endpoint cannot answer without.
QUERIES = {
    "api:routing-resolve": "?sender=someone@example.com&recipient=friend@example.net",
    "smtpadmin:picker": "?name=server",
}


# --- the URLs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    key: str  # what RULES match: "servers:server", "api:server-detail", "api:queues/<pk>/freeze"
    route: str  # "servers/<pk>/", with the kwargs as <name>
    callback: Any

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/v1/")


ROUTE_KWARG = re.compile(r"<(?:\w+:)?(\w+)>")


def _regex_route(regex: str) -> str:
    """A DRF router's regex (``^queues/(?P<pk>[0-9]+)/freeze$``) as ``queues/<pk>/freeze``."""
    out, i = [], 0
    while i < len(regex):
        if regex.startswith("(?P<", i):
            name_end = regex.index(">", i)
            out.append(f"<{regex[i + 4 : name_end]}>")
            depth, i = 1, name_end + 1
            while depth:  # skip the group's pattern, brackets and escapes included
                if regex[i] == "\\":
                    i += 1
                elif regex[i] == "(":
                    depth += 1
                elif regex[i] == ")":
                    depth -= 1
                i += 1
            continue
        if regex[i] == "\\":
            out.append(regex[i + 1])
            i += 2
            continue
        if regex[i] not in "^$":
            out.append(regex[i])
        i += 1
    return "".join(out)


def _walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[tuple[str, Any, str]]:
    for pattern in patterns:
        part = str(pattern.pattern)
        if hasattr(pattern.pattern, "_regex") and not hasattr(pattern.pattern, "_route"):
            part = _regex_route(part)
        else:
            part = ROUTE_KWARG.sub(r"<\1>", part)
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _walk(pattern.url_patterns, prefix + part, inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}{pattern.name}" if pattern.name else ""
            yield name, pattern.callback, prefix + part


def endpoints() -> list[Endpoint]:
    found: dict[str, Endpoint] = {}
    for name, callback, route in _walk(get_resolver().url_patterns, "", ""):
        if "<format>" in route:
            continue  # DRF's format suffixes (.json, .api): the same views once more
        if route.startswith("api/v1/"):
            key = f"api:{name}" if name else f"api:{route.removeprefix('api/v1/')}"
        else:
            key = name or route
        found.setdefault(f"{key} {route}", Endpoint(key, route, callback))
    return sorted(found.values(), key=lambda e: (e.key, e.route))


def rule_for(endpoint: Endpoint) -> Rule:
    for pattern, rule in RULES:
        if fnmatch.fnmatchcase(endpoint.key, pattern):
            return rule
    raise LookupError(
        f"No role expectation for the URL {endpoint.key!r} (/{endpoint.route}): add a rule for "
        f"it to RULES in {__name__} (or to EXCEPTIONS, with the reason it is public)."
    )


ENDPOINTS = endpoints()
MATRIX = [e for e in ENDPOINTS if e.key not in EXCEPTIONS]


# --- the world -------------------------------------------------------------------------------


def build_world() -> dict[type[models.Model], models.Model]:
    """One row of every model (and the users the matrix's callers act on)."""
    server = make_server("mercury")
    virtual_server = make_virtual_server(server)
    session = make_session(virtual_server)
    domain = make_domain("example.com")
    mailbox = make_mailbox("alice@example.com")
    credential = make_credential()
    certificate = make_certificate()
    connector = make_connector([virtual_server], spaces=(("partner.example", 1),))
    message = make_queued_message("example.net")
    entry = message.entries.get()
    tracking = TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.RECEIVED, queue_id=message.queue_id, sender=message.sender
    )
    rule = ReplyRule.objects.create(order=1, code="552", action=ReplyRule.Action.RETRY)
    job = BulkJob.objects.create(action=BulkJob.Action.FREEZE, queue=entry.queue)
    audit = AuditEntry.objects.create(
        username="someone", action=AuditEntry.Action.UPDATE, object_type="Server", field="name"
    )
    LoginThrottle.objects.create(
        scope=LoginThrottle.Scope.CONSOLE,
        username="someone",
        client="192.0.2.1",
        failures=1,
        first_failure_at=timezone.now(),
    )
    return {
        Organization: Organization.get(),
        RoutingGroup: RoutingGroup.first(),
        Server: server,
        VirtualServer: virtual_server,
        SmtpSession: session,
        AcceptedDomain: domain,
        Mailbox: mailbox,
        SmtpCredential: credential,
        Certificate: certificate,
        Connector: connector,
        AddressSpace: connector.address_spaces.get(),
        LinkQueue: entry.queue,
        Message: message,
        type(entry): entry,
        type(entry.recipients.get()): entry.recipients.get(),
        TrackingEvent: tracking,
        ReplyRule: rule,
        BulkJob: job,
        AuditEntry: audit,
        User: make_user("ursula"),
    }


def fill(route: str, world: dict[type[models.Model], models.Model]) -> str:
    """The route with each id replaced by the id of the world's object of the collection that
    precedes it (``servers/<pk>/`` -> ``servers/7/``)."""
    parts = route.split("/")
    for index, part in enumerate(parts):
        match = re.fullmatch(r"<(\w+)>", part)
        if not match:
            continue
        if match.group(1) in NAMED_PARTS:
            parts[index] = NAMED_PARTS[match.group(1)]
            continue
        collection = parts[index - 1] if index else ""
        if match.group(1) in ("group",):
            collection = "routing-groups"
        model = COLLECTIONS.get(collection)
        assert model is not None, (
            f"/{route}: no model for the id {part} after {collection!r}; add the collection to "
            f"COLLECTIONS in {__name__}"
        )
        parts[index] = str(world[model].pk)
    return "/" + "/".join(parts)


# --- the matrix ------------------------------------------------------------------------------


def has_method(endpoint: Endpoint, method: str) -> bool:
    """Whether the view answers ``method`` at all (else 405 for those allowed to ask)."""
    actions = getattr(endpoint.callback, "actions", None)
    if actions is not None:  # a DRF viewset route: only its mapped methods (and OPTIONS)
        return (
            method == "OPTIONS"
            or method.lower() in actions
            or (method == "HEAD" and "get" in actions)
        )
    view = getattr(endpoint.callback, "view_class", None) or getattr(endpoint.callback, "cls", None)
    assert view is not None, f"/{endpoint.route} is a function view; give it a class"
    if method.lower() not in view.http_method_names:
        return False
    if method == "HEAD":
        return hasattr(view, "get") or hasattr(view, "head")
    return hasattr(view, method.lower())


def expected(endpoint: Endpoint, caller: str, method: str) -> str:
    """'login', 'denied', 'allowed' or 'absent' (405)."""
    role = CALLERS[caller]
    if role is None:
        return "login"
    rule = rule_for(endpoint)
    needed = rule.read if method in READS else max(rule.write, rule.read)
    if role < max(needed, Role.VIEW_ONLY):
        return "denied"
    return "allowed" if has_method(endpoint, method) else "absent"


def outcome(endpoint: Endpoint, response: Any) -> str:
    status = response.status_code
    if status in (301, 302) and "/login/" in response.get("Location", ""):
        return "login"
    if status == 401 and endpoint.is_api:
        return "login"
    if status == 403:
        return "denied"
    if status == 405:
        return "absent"
    if status >= 500:
        return f"error {status}"
    if status in (401, 404):
        return f"unexpected {status}"
    return "allowed"


def request(client: Client, endpoint: Endpoint, method: str, url: str) -> Any:
    send = getattr(client, method.lower())
    if method in ("GET", "HEAD", "OPTIONS"):
        return send(url)
    if endpoint.is_api:
        return send(url, "{}", content_type="application/json")
    if method == "POST":
        return send(url, {})
    return send(url, "", content_type="application/x-www-form-urlencoded")


def clients() -> dict[str, Client]:
    made = {"anonymous": Client()}
    for caller, role in CALLERS.items():
        if role is not None:
            client = Client()
            client.force_login(make_person(f"matrix-{caller.replace(' ', '-')}", role))
            made[caller] = client
    return made


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", MATRIX, ids=[f"{e.key} /{e.route}" for e in MATRIX])
def test_each_caller_gets_exactly_its_rights_on_each_url(endpoint: Endpoint) -> None:
    rule_for(endpoint)  # an unknown URL fails here, with its name
    world = build_world()
    url = fill(endpoint.route, world) + QUERIES.get(endpoint.key, "")
    callers = clients()
    wrong = []
    for caller, client in callers.items():
        for method in METHODS:
            want = expected(endpoint, caller, method)
            # The cell's writes are undone, so every cell sees the same world.
            with transaction.atomic():
                audited = AuditEntry.objects.count()
                response = request(client, endpoint, method, url)
                changed = AuditEntry.objects.count() != audited
                transaction.set_rollback(True)
            got = outcome(endpoint, response)
            if got != want:
                wrong.append(
                    f"{caller} {method} {url}: expected {want}, got {got} ({response.status_code})"
                )
            elif changed and got != "allowed":
                # Every change is audited: a refused request must not have made one.
                wrong.append(f"{caller} {method} {url}: refused ({got}) but audited a change")
    assert wrong == [], "\n".join(wrong)


def test_every_url_has_an_expectation_or_is_a_listed_exception() -> None:
    missing = []
    for endpoint in MATRIX:
        try:
            rule_for(endpoint)
        except LookupError as exc:
            missing.append(str(exc))
    assert missing == [], "\n".join(missing)


def test_the_matrix_covers_the_console_and_the_api() -> None:
    keys = {e.key for e in MATRIX}
    assert {"servers:server", "admin_pages:users", "api:server-detail"} <= keys
    assert "api:queues/<pk>/freeze" in keys  # the router's routes without a trailing slash
    assert len(MATRIX) > 80
    assert set(EXCEPTIONS) <= {e.key for e in ENDPOINTS}


def test_an_unknown_url_fails_with_a_message_naming_it() -> None:
    stranger = Endpoint("servers:frobnicate", "servers/<pk>/frobnicate/", None)
    with pytest.raises(LookupError, match=r"'servers:frobnicate' \(/servers/<pk>/frobnicate/\)"):
        rule_for(stranger)
    with pytest.raises(LookupError, match="add a rule"):
        rule_for(Endpoint("api:frobnicate-list", "api/v1/frobnicate/", None))


@pytest.mark.django_db
def test_the_public_urls_are_public() -> None:
    anonymous = Client()
    assert anonymous.get("/login/").status_code == 200
    assert anonymous.get("/api/schema/").status_code == 200
    assert anonymous.get("/api/docs/").status_code == 200
    assert (
        anonymous.post("/api/v1/auth/token/", {}, content_type="application/json").status_code
        == 400
    )
