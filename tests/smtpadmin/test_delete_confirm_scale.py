"""A delete confirmation costs a page of rows however many objects depend on the object: the
first of each kind by name and how many more, never every one of 10,000 loaded or named."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models.signals import post_init
from django.test import Client

from connectors.models import Connector
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer
from smtpadmin.listing import SHOWN_ON_DELETE

pytestmark = pytest.mark.django_db

COUNT = SHOWN_ON_DELETE * 2 + 7


class Loaded:
    """How many model instances of each kind the code under test built from rows."""

    def __init__(self) -> None:
        self.counts: dict[type, int] = {}

    def __call__(self, sender: type, **kwargs: Any) -> None:
        self.counts[sender] = self.counts.get(sender, 0) + 1

    def of(self, model: type) -> int:
        return self.counts.get(model, 0)


@pytest.fixture
def loaded() -> Iterator[Loaded]:
    counter = Loaded()
    post_init.connect(counter, weak=False)
    yield counter
    post_init.disconnect(counter)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def only_bridgehead_of_many() -> VirtualServer:
    group = RoutingGroup.first()
    server = Server.objects.create(name="mx", routing_group=group)
    vs = VirtualServer.objects.create(server=server, name="Listener", port=25)
    Connector.objects.bulk_create(
        Connector(name=f"conn-{n:04d}", routing_group=group) for n in range(COUNT)
    )
    vs.connectors.add(*Connector.objects.all())
    return vs


def test_a_virtual_server_bridging_many_connectors_names_a_few_and_counts_the_rest(
    administrator: User, loaded: Loaded
) -> None:
    vs = only_bridgehead_of_many()
    client = logged_in(administrator)
    loaded.counts.clear()

    text = client.get(f"/servers/virtual-servers/{vs.pk}/delete/").content.decode()

    # Names read a page at a time (the tree beside it loads its own first few connectors).
    assert loaded.of(Connector) <= SHOWN_ON_DELETE
    refusal = re.search(r"is the only bridgehead of: ([^.]*)\.", text)
    assert refusal, text
    named = re.findall(r"conn-\d{4}", refusal.group(1))
    assert named == [f"conn-{n:04d}" for n in range(VirtualServer.NAMED_ON_DELETE)]
    assert refusal.group(1).endswith(f" and {COUNT - VirtualServer.NAMED_ON_DELETE} more")
    assert len(re.findall(r"<li>[^<]*conn-\d+ \(bridgehead\)</li>", text)) == SHOWN_ON_DELETE
    assert f"<li>… and {COUNT - SHOWN_ON_DELETE} more</li>" in text


def test_an_accepted_domain_with_many_mailboxes_shows_the_first_and_how_many_more(
    administrator: User, loaded: Loaded
) -> None:
    domain = AcceptedDomain.objects.create(domain="big.test")
    Mailbox.objects.bulk_create(
        Mailbox(address=f"user{n:04d}@big.test", domain=domain) for n in range(COUNT)
    )
    client = logged_in(administrator)
    loaded.counts.clear()

    text = client.get(f"/servers/accepted-domains/{domain.pk}/delete/").content.decode()

    assert loaded.of(Mailbox) <= SHOWN_ON_DELETE + 1
    assert "It cannot be deleted while these depend on it" in text
    assert len(re.findall(r"<li>Mailbox: user\d{4}@big\.test", text)) == SHOWN_ON_DELETE
    assert f"<li>… and {COUNT - SHOWN_ON_DELETE} more</li>" in text
    assert 'type="submit"' not in text.split("depend on it", 1)[1]
