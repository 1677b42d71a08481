"""A small organization for whole-API tests: one of everything the API serves (servers,
virtual servers with a live session, a connector, accepted domains, mailboxes, an SMTP
credential, a certificate, queued messages with their tracking events, a second user) and a
Full Administrator with an API token."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from rest_framework.authtoken.models import Token

from relay.models import LinkQueue, QueueEntry, TrackingEvent
from servers.models import AcceptedDomain, Certificate, Mailbox, SmtpCredential, SmtpSession
from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.relay.queue_world import deliver, entry, fail, make_queues
from tests.relay.test_intake import set_tracking


@dataclass
class ApiWorld:
    token: str
    #: The id of one real object per path parameter's resource ("virtual-servers": 3, ...).
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def make_api_world(tmp_path: Path) -> ApiWorld:
    set_tracking(enabled=True, subjects=True)
    queues = make_queues(tmp_path)
    world = queues.world
    queues.send(["someone@far.test", "other@far.test"], subject="Invoice")
    message = queues.send(["bob@smtpadmin.test"], received_at=timezone.now() - timedelta(hours=2))
    queues.send(["alice@smtpadmin.test", "x@elsewhere.test"])
    # Messages no longer waiting (no expiry, no queue) and a message tried and frozen.
    done = queues.send(["carol@far.test"])
    deliver(entry(done))
    tried = queues.send(["dave@far.test"])
    fail(entry(tried))
    QueueEntry.objects.filter(message=tried).update(state=QueueEntry.State.FROZEN)
    credential = SmtpCredential(username="scanner", send_limit_per_hour=100)
    credential.set_password("scanner-password-1")
    credential.full_clean()
    credential.save()
    credential.virtual_servers.set([world.vs])
    certificate = Certificate.generate_self_signed(name="mx", common_name="mx.smtpadmin.test")
    certificate.save()
    session = SmtpSession.objects.create(
        virtual_server=world.vs,
        key="node1/1",
        client_address="192.0.2.10",
        client_port=40000,
        client_name="mail.outside.test",
        helo="mail.outside.test",
        connected_at=timezone.now(),
    )
    admin = make_person("fiona-full", Role.FULL)
    other = make_person("vera-viewer", Role.VIEW_ONLY)
    AuditEntry.objects.create(
        username=admin.username,
        action="update",
        object_type="virtualserver",
        object_id=str(world.vs.pk),
        object_repr=str(world.vs),
        field="port",
        old_value="25",
        new_value="2525",
    )
    token = Token.objects.create(user=admin)
    return ApiWorld(
        token=token.key,
        ids={
            "routing-groups": world.server.routing_group_id or 0,
            "servers": world.server.pk,
            "virtual-servers": world.vs.pk,
            "sessions": session.pk,
            "accepted-domains": AcceptedDomain.objects.order_by("pk")[0].pk,
            "mailboxes": Mailbox.objects.order_by("pk")[0].pk,
            "smtp-credentials": credential.pk,
            "certificates": certificate.pk,
            "connectors": queues.internet.pk,
            "users": other.pk,
            "audit-log": AuditEntry.objects.order_by("pk")[0].pk,
            "queues": LinkQueue.objects.filter(entries__isnull=False).order_by("pk")[0].pk,
            "messages": message.pk,
            "tracking-events": TrackingEvent.objects.order_by("pk")[0].pk,
        },
    )
