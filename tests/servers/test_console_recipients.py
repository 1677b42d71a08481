"""Accepted domains (one default, moved with an audit trail) and mailboxes in the console."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from servers.models import AcceptedDomain, Mailbox
from smtpadmin.models import AuditEntry
from tests.servers.console_world import World, build_world, html_of, logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def test_an_administrator_adds_a_domain_and_it_is_audited(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        "/servers/accepted-domains/new/",
        {"domain": "Partner.EXAMPLE.org", "type": "external_relay"},
    )
    assert response.status_code == 302
    domain = AcceptedDomain.objects.get(domain="partner.example.org")
    assert response["Location"] == f"/servers/accepted-domains/{domain.pk}/"
    assert domain.type == "external_relay" and not domain.is_default
    entry = AuditEntry.objects.get(object_id=str(domain.pk), field="type")
    assert (entry.username, entry.new_value) == (administrator.username, "external_relay")


def test_making_a_domain_default_takes_the_flag_from_the_previous_one(
    administrator: User, world: World
) -> None:
    other = AcceptedDomain.objects.create(domain="example.net")
    response = logged_in(administrator).post(
        f"/servers/accepted-domains/{other.pk}/",
        {"domain": "example.net", "type": "authoritative", "is_default": "on"},
    )
    assert response.status_code == 302
    assert AcceptedDomain.objects.get(is_default=True) == other
    taken = AuditEntry.objects.get(object_id=str(world.domain.pk), field="is_default")
    given = AuditEntry.objects.get(object_id=str(other.pk), field="is_default")
    assert (taken.old_value, taken.new_value) == ("yes", "no")
    assert (given.old_value, given.new_value) == ("no", "yes")
    assert taken.username == given.username == administrator.username


def test_a_new_domain_can_be_the_default_at_once(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/accepted-domains/new/",
        {"domain": "corp.example", "type": "authoritative", "is_default": "on"},
    )
    assert response.status_code == 302
    assert AcceptedDomain.objects.get(is_default=True).domain == "corp.example"


def test_a_wildcard_cannot_be_the_default(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/accepted-domains/new/",
        {"domain": "*.example.org", "type": "internal_relay", "is_default": "on"},
    )
    assert response.status_code == 400
    assert "The default domain cannot be a wildcard." in html_of(response)
    assert AcceptedDomain.objects.get(is_default=True) == world.domain


def test_star_alone_would_be_an_open_relay(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/accepted-domains/new/", {"domain": "*", "type": "external_relay"}
    )
    assert response.status_code == 400
    assert "open relay" in html_of(response)


def test_a_view_only_administrator_cannot_change_domains(view_only: User, world: World) -> None:
    client = logged_in(view_only)
    assert (
        client.post(
            "/servers/accepted-domains/new/", {"domain": "x.example", "type": "authoritative"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/servers/accepted-domains/{world.domain.pk}/",
            {"domain": "hijack.example", "type": "external_relay"},
        ).status_code
        == 403
    )
    assert client.post(f"/servers/accepted-domains/{world.domain.pk}/delete/").status_code == 403
    assert list(AcceptedDomain.objects.values_list("domain", flat=True)) == ["example.com"]
    assert not AuditEntry.objects.exists()


def test_a_domain_with_mailboxes_cannot_be_deleted(administrator: User, world: World) -> None:
    url = f"/servers/accepted-domains/{world.domain.pk}/delete/"
    html = html_of(logged_in(administrator).get(url))
    assert "It cannot be deleted while these depend on it" in html
    assert "Mailbox: alice@example.com" in html
    assert ">Delete</button>" not in html
    assert logged_in(administrator).post(url).status_code == 409
    assert AcceptedDomain.objects.filter(pk=world.domain.pk).exists()


def test_an_empty_domain_is_deleted_and_audited(administrator: User, world: World) -> None:
    spare = AcceptedDomain.objects.create(domain="spare.example")
    response = logged_in(administrator).post(f"/servers/accepted-domains/{spare.pk}/delete/")
    assert response.status_code == 302
    assert response["Location"] == "/servers/accepted-domains/"
    assert not AcceptedDomain.objects.filter(pk=spare.pk).exists()
    assert AuditEntry.objects.get(action="delete").object_repr == "spare.example"


def test_the_domain_list_shows_type_default_and_mailboxes(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get("/servers/accepted-domains/?sort=domain&dir=desc"))
    assert "Authoritative" in html and "default" in html
    assert "<td>1</td>" in html  # one mailbox


def test_an_administrator_adds_a_mailbox(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/mailboxes/new/",
        {"address": "Bob@Example.com", "display_name": "Bob", "enabled": "on"},
    )
    assert response.status_code == 302
    mailbox = Mailbox.objects.get(address="bob@example.com")
    assert mailbox.domain == world.domain
    assert AuditEntry.objects.get(object_id=str(mailbox.pk), field="address").new_value == (
        "bob@example.com"
    )


def test_a_mailbox_outside_an_authoritative_domain_is_refused(
    administrator: User, world: World
) -> None:
    AcceptedDomain.objects.create(domain="relay.example", type="external_relay")
    client = logged_in(administrator)
    for address in ("carol@relay.example", "dave@nowhere.example"):
        response = client.post("/servers/mailboxes/new/", {"address": address, "enabled": "on"})
        assert response.status_code == 400
        html = html_of(response)
        assert "is not an authoritative accepted domain." in html
        field = html[html.index('name="address"') :]
        assert field.index('class="errorlist"') < field.index('name="display_name"')
    assert Mailbox.objects.count() == 1


def test_an_administrator_changes_a_mailbox_and_it_is_audited(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/mailboxes/{world.mailbox.pk}/",
        {"address": "alice@example.com", "display_name": "Alice Liddell"},
    )
    assert response.status_code == 302
    mailbox = Mailbox.objects.get(pk=world.mailbox.pk)
    assert mailbox.display_name == "Alice Liddell" and not mailbox.enabled
    enabled = AuditEntry.objects.get(field="enabled")
    assert (enabled.old_value, enabled.new_value) == ("yes", "no")


def test_a_view_only_administrator_cannot_change_mailboxes(view_only: User, world: World) -> None:
    client = logged_in(view_only)
    assert (
        client.post(
            f"/servers/mailboxes/{world.mailbox.pk}/", {"address": "x@example.com"}
        ).status_code
        == 403
    )
    assert client.post(f"/servers/mailboxes/{world.mailbox.pk}/delete/").status_code == 403
    assert Mailbox.objects.get().address == "alice@example.com"


def test_a_mailbox_is_deleted_and_audited(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(f"/servers/mailboxes/{world.mailbox.pk}/delete/")
    assert response.status_code == 302
    assert not Mailbox.objects.exists()
    assert AuditEntry.objects.get(action="delete").object_repr == "alice@example.com"
