"""The permission matrix of /api/v1/: every role against every resource and every method.

Anonymous callers get 401 (token authentication comes first, so DRF answers with a
``WWW-Authenticate: Token`` challenge); an outsider (a user with no role) gets 403 everywhere; a
view-only administrator reads everything and may change nothing (not even terminate an SMTP
session or freeze a queue); an administrator changes all configuration and acts on queues and
messages but changes no users; a full administrator does everything. The audit log is
read-only for everyone: writing it answers 405 to those who may read it, and so are the live
SMTP sessions, which only the relay worker writes, and the queues, messages and tracking
events, which only the relay and delivery write (administrators act on them through their
actions).

Every allowed write is made with a valid payload and must really succeed, so each 403 here is
the answer to a request that would otherwise have worked.

The object factories below are shared by the other API test modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import models
from django.utils import timezone
from rest_framework.test import APIClient

from connectors.models import AddressSpace, Connector
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent, new_queue_id
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
from smtpadmin.models import AuditEntry, Organization
from smtpadmin.roles import Role, set_role

API = "/api/v1/"
STRONG_PASSWORD = "a long and unusual passphrase 7"


# --- factories (plain objects.create; shared with the other API test modules) ----------------


def make_server(name: str = "mercury") -> Server:
    return Server.objects.get_or_create(
        name=name, defaults={"fqdn": f"{name}.example.com", "routing_group": RoutingGroup.first()}
    )[0]


def make_virtual_server(
    server: Server | None = None, name: str = "Default SMTP Virtual Server", port: int = 2525
) -> VirtualServer:
    return VirtualServer.objects.create(
        server=server or make_server(), name=name, ip_address="127.0.0.1", port=port
    )


def make_connector(
    bridgeheads: list[VirtualServer] | None = None,
    name: str = "Internet",
    spaces: tuple[tuple[str, int], ...] = (("*", 1),),
) -> Connector:
    connector = Connector.objects.create(name=name, routing_group=RoutingGroup.first())
    connector.bridgeheads.set(
        bridgeheads or [VirtualServer.objects.first() or make_virtual_server()]
    )
    for domain, cost in spaces:
        AddressSpace.objects.create(connector=connector, domain=domain, cost=cost)
    return connector


def make_domain(domain: str = "example.com", **fields: Any) -> AcceptedDomain:
    return AcceptedDomain.objects.get_or_create(domain=domain, defaults=fields)[0]


def make_mailbox(address: str = "alice@example.com") -> Mailbox:
    return Mailbox.objects.create(address=address, domain=make_domain(address.split("@")[1]))


def make_credential(
    username: str = "scanner", password: str = "scanner secret 1"
) -> SmtpCredential:
    credential = SmtpCredential(username=username)
    credential.set_password(password)
    credential.save()
    return credential


def make_certificate(name: str = "mail", common_name: str = "mail.example.com") -> Certificate:
    certificate = Certificate.generate_self_signed(name=name, common_name=common_name)
    certificate.save()
    return certificate


def make_session(virtual_server: VirtualServer | None = None, key: str = "mx/1/1") -> SmtpSession:
    """A live SMTP session as the relay worker reports it."""
    return SmtpSession.objects.create(
        virtual_server=virtual_server or make_virtual_server(),
        key=key,
        client_address="192.0.2.7",
        client_port=51234,
        connected_at=timezone.now(),
    )


def make_queued_message(domain: str = "example.net") -> Message:
    """A message waiting in the link queue of ``domain``, as intake leaves it."""
    queue = LinkQueue.objects.get_or_create(
        key=f"dns:{domain}", defaults={"kind": "dns", "name": domain, "domain": domain}
    )[0]
    content = b"Subject: Hello\r\n\r\nHi.\r\n"
    message = Message.objects.create(
        queue_id=new_queue_id(), sender="someone@example.com", content=content, size=len(content)
    )
    entry = QueueEntry.objects.create(
        message=message, queue=queue, expires_at=timezone.now() + timedelta(days=2)
    )
    Recipient.objects.create(
        message=message, entry=entry, address=f"friend@{domain}", domain=domain
    )
    return message


def make_tracking_event() -> TrackingEvent:
    message = make_queued_message()
    return TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.RECEIVED, queue_id=message.queue_id, sender=message.sender
    )


def make_user(username: str = "ursula", role: Role = Role.VIEW_ONLY) -> User:
    user = User.objects.create_user(username=username, password=STRONG_PASSWORD)
    set_role(user, role)
    return user


def connector_payload(name: str = "Partner", **fields: Any) -> dict[str, Any]:
    bridgehead = VirtualServer.objects.first() or make_virtual_server()
    return {
        "name": name,
        "routing_group": RoutingGroup.first().pk,
        "address_spaces": [{"domain": "partner.example", "cost": 1}],
        "bridgeheads": [bridgehead.pk],
        "use_dns": False,
        "smart_hosts": "relay.example.net",
        **fields,
    }


# --- the resources ---------------------------------------------------------------------------

LIST, RETRIEVE, CREATE, UPDATE, PATCH, DELETE = (
    "list",
    "retrieve",
    "create",
    "update",
    "partial_update",
    "delete",
)
READS = (LIST, RETRIEVE)
CRUD = (LIST, RETRIEVE, CREATE, UPDATE, PATCH, DELETE)
ACTIONS = ("start", "stop", "pause")
# A virtual server's Current Sessions: terminate one (detail) or all (the list).
TERMINATE, TERMINATE_ALL = "terminate", "terminate-all"
# Queue Viewer's actions on a queue, and on a message (its POST "delete" is not HTTP DELETE).
QUEUE_ACTIONS = ("freeze", "unfreeze", "retry", "delete-messages")
DELETE_MESSAGE, BULK = "delete-message", "bulk"
MESSAGE_ACTIONS = ("freeze", "unfreeze", DELETE_MESSAGE)
# Action -> its path after the object's id (detail actions) or after the collection.
DETAIL_ACTIONS = {
    **{a: a for a in (*ACTIONS, TERMINATE, *QUEUE_ACTIONS, *MESSAGE_ACTIONS)},
    DELETE_MESSAGE: "delete",
}
LIST_ACTIONS = {TERMINATE_ALL: "terminate-all", BULK: "bulk"}
METHOD = {
    LIST: "get",
    RETRIEVE: "get",
    CREATE: "post",
    UPDATE: "put",
    PATCH: "patch",
    DELETE: "delete",
    **{a: "post" for a in (*DETAIL_ACTIONS, *LIST_ACTIONS)},
}
SUCCESS = {
    LIST: 200,
    RETRIEVE: 200,
    CREATE: 201,
    UPDATE: 200,
    PATCH: 200,
    DELETE: 204,
    TERMINATE: 202,
    TERMINATE_ALL: 202,
}


def _none(obj: Any = None) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Resource:
    path: str
    make: Callable[[], models.Model]
    create: Callable[[], dict[str, Any]] = _none
    update: Callable[[Any], dict[str, Any]] = _none
    patch: Callable[[Any], dict[str, Any]] = _none
    operations: tuple[str, ...] = CRUD
    write_role: Role = Role.ADMINISTRATOR
    singleton: bool = False
    query: dict[str, str] = field(default_factory=dict)
    # The collection's path for a nested resource, from one of its objects.
    nested: Callable[[Any], str] | None = None
    # The body of an action that needs one.
    action_payloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, operation: str, obj: models.Model | None) -> str:
        if self.path == "routing/resolve":
            return f"{API}{self.path}"  # DESIGN: no trailing slash
        path = self.nested(obj) if self.nested and obj is not None else self.path
        if operation in LIST_ACTIONS:
            return f"{API}{path}/{LIST_ACTIONS[operation]}/"
        if self.singleton or operation in (LIST, CREATE) or obj is None:
            return f"{API}{path}/"
        if operation in DETAIL_ACTIONS:
            return f"{API}{path}/{obj.pk}/{DETAIL_ACTIONS[operation]}/"
        return f"{API}{path}/{obj.pk}/"

    def payload(self, operation: str, obj: Any) -> dict[str, Any] | None:
        if operation == CREATE:
            return self.create()
        if operation == UPDATE:
            return self.update(obj)
        if operation == PATCH:
            return self.patch(obj)
        return self.action_payloads.get(operation)


def _audit_entry() -> AuditEntry:
    return AuditEntry.objects.create(
        username="someone", action=AuditEntry.Action.UPDATE, object_type="Server", field="name"
    )


RESOURCES = [
    Resource(
        "routing-groups",
        make=lambda: RoutingGroup.objects.create(name="Second Routing Group"),
        create=lambda: {"name": "Third Routing Group"},
        update=lambda obj: {"name": "Renamed Routing Group"},
        patch=lambda obj: {"name": "Patched Routing Group"},
    ),
    Resource(
        "servers",
        make=lambda: make_server("venus"),
        create=lambda: {
            "name": "mars",
            "fqdn": "mars.example.com",
            "routing_group": RoutingGroup.first().pk,
        },
        update=lambda obj: {
            "name": "venus-2",
            "fqdn": "venus2.example.com",
            "routing_group": obj.routing_group_id,
        },
        patch=lambda obj: {"fqdn": "venus3.example.com"},
    ),
    Resource(
        "virtual-servers",
        make=lambda: make_virtual_server(),
        create=lambda: {"server": make_server("jupiter").pk, "name": "Inbound", "port": 2526},
        update=lambda obj: {"server": obj.server_id, "name": "Renamed", "port": 2527},
        patch=lambda obj: {"port": 2528},
        operations=(*CRUD, *ACTIONS),
    ),
    Resource(
        "virtual-servers/{id}/sessions",
        make=lambda: make_session(),
        nested=lambda obj: f"virtual-servers/{obj.virtual_server_id}/sessions",
        # Live sessions are the relay worker's to write: reading, Terminate, Terminate All.
        operations=(*READS, TERMINATE, TERMINATE_ALL),
    ),
    Resource(
        "accepted-domains",
        make=lambda: make_domain("example.com"),
        create=lambda: {"domain": "example.org", "type": "authoritative"},
        update=lambda obj: {"domain": "example.net", "type": "internal_relay"},
        patch=lambda obj: {"type": "external_relay"},
    ),
    Resource(
        "mailboxes",
        make=lambda: make_mailbox("alice@example.com"),
        create=lambda: {"address": f"bob@{make_domain('example.com').domain}"},
        update=lambda obj: {"address": "alice.smith@example.com", "display_name": "Alice"},
        patch=lambda obj: {"enabled": False},
    ),
    Resource(
        "smtp-credentials",
        make=lambda: make_credential(),
        create=lambda: {"username": "printer", "password": "printer secret 1"},
        update=lambda obj: {"username": "scanner-2", "enabled": False},
        patch=lambda obj: {"send_limit_per_hour": 100},
    ),
    Resource(
        "certificates",
        make=lambda: make_certificate(),
        create=lambda: {
            "name": "smtp",
            "generate_self_signed": True,
            "common_name": "smtp.example.com",
        },
        update=lambda obj: {"name": "renamed"},
        patch=lambda obj: {"name": "patched"},
    ),
    Resource(
        "connectors",
        make=lambda: make_connector(),
        create=lambda: connector_payload(),
        update=lambda obj: connector_payload(name="Renamed", use_dns=True, smart_hosts=""),
        patch=lambda obj: {"admin_note": "Patched."},
    ),
    Resource(
        "users",
        make=lambda: make_user(),
        create=lambda: {"username": "newbie", "password": STRONG_PASSWORD, "role": "view_only"},
        update=lambda obj: {"username": "ursula", "email": "u@example.com", "role": "view_only"},
        patch=lambda obj: {"first_name": "Ursula"},
        write_role=Role.FULL,
    ),
    Resource(
        "audit-log",
        make=_audit_entry,
        # Nobody writes the log; anyone who may read it is told the method does not exist.
        operations=READS,
        write_role=Role.VIEW_ONLY,
    ),
    Resource(
        "organization",
        make=Organization.get,
        update=lambda obj: {"name": "Example Organization", "recipients_limit": 1000},
        patch=lambda obj: {"recipients_limit": 100},
        operations=(RETRIEVE, UPDATE, PATCH),
        singleton=True,
    ),
    Resource(
        "queues",
        make=lambda: make_queued_message().entries.get().queue,
        # The queues are the relay's: reading, and Queue Viewer's actions.
        operations=(*READS, *QUEUE_ACTIONS),
    ),
    Resource(
        "messages",
        make=make_queued_message,
        operations=(*READS, *MESSAGE_ACTIONS, BULK),
        action_payloads={BULK: {"filter": {"sender": "someone@"}, "action": "freeze"}},
    ),
    Resource("tracking-events", make=make_tracking_event, operations=READS),
    Resource(
        "routing/resolve",
        make=lambda: make_connector(),
        operations=(LIST,),
        singleton=True,
        query={"sender": "someone@example.com", "recipient": "friend@example.net"},
    ),
]
BY_PATH = {r.path: r for r in RESOURCES}
ROLES = ("full_admin", "administrator", "view_only", "outsider", "anonymous")
LEVEL = {
    "full_admin": Role.FULL,
    "administrator": Role.ADMINISTRATOR,
    "view_only": Role.VIEW_ONLY,
    "outsider": Role.NONE,
    "anonymous": Role.NONE,
}


def expected_status(role: str, resource: Resource, operation: str) -> int:
    if role == "anonymous":
        return 401
    level = LEVEL[role]
    if level < Role.VIEW_ONLY:
        return 403
    if operation in READS:
        return 200
    if level < resource.write_role:
        return 403
    if operation not in resource.operations:
        return 405
    return SUCCESS.get(operation, 200)


def _cases() -> list[Any]:
    cases = []
    for resource in RESOURCES:
        if resource.path == "routing/resolve":
            operations: tuple[str, ...] = (LIST,)
        elif resource.singleton:
            operations = (RETRIEVE, CREATE, UPDATE, PATCH, DELETE)
        else:
            operations = tuple(dict.fromkeys((*CRUD, *resource.operations)))
        for operation in operations:
            for role in ROLES:
                expected = expected_status(role, resource, operation)
                cases.append(
                    pytest.param(
                        role,
                        resource.path,
                        operation,
                        expected,
                        id=f"{role}-{resource.path}-{operation}-{expected}",
                    )
                )
    return cases


def client_as(request: pytest.FixtureRequest, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.force_authenticate(request.getfixturevalue(role))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "path", "operation", "expected"), _cases())
def test_each_role_gets_exactly_its_rights_on_each_resource(
    request: pytest.FixtureRequest, role: str, path: str, operation: str, expected: int
) -> None:
    resource = BY_PATH[path]
    client = client_as(request, role)
    obj = resource.make()
    payload = resource.payload(operation, obj)
    url = resource.url(operation, obj)
    send = getattr(client, METHOD[operation])
    if METHOD[operation] == "get":
        response = send(url, resource.query)
    else:
        response = send(url, payload, format="json")
    assert response.status_code == expected, (url, payload, response.content[:500])
    if expected == 401:
        assert response["WWW-Authenticate"] == "Token"
    if expected in (403, 401):
        assert "detail" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["administrator", "view_only", "outsider"])
def test_nobody_below_full_administrator_can_grant_themselves_a_role(
    request: pytest.FixtureRequest, role: str
) -> None:
    user = request.getfixturevalue(role)
    response = client_as(request, role).patch(
        f"{API}users/{user.pk}/", {"role": "full_administrator"}, format="json"
    )
    assert response.status_code == 403
    user.refresh_from_db()
    assert not user.is_superuser


@pytest.mark.django_db
def test_a_deactivated_administrator_loses_every_right(administrator: User) -> None:
    administrator.is_active = False
    administrator.save()
    client = APIClient()
    client.force_authenticate(administrator)
    assert client.get(f"{API}servers/").status_code == 403
