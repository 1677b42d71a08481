"""The Routing Simulator page: where mail from S to R would go, and each step's reason, from
the routing function the relay uses; bad input is a field error, never a 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from connectors.models import AddressSpace, Connector
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer

pytestmark = pytest.mark.django_db

URL = "/connectors/simulator/"


@pytest.fixture
def small_topology(db: Any) -> dict[str, Any]:
    """An "Internet" connector for * by DNS and a "Partner" connector for partner.example
    through a smart host, both sent by the one virtual server; an authoritative domain."""
    group = RoutingGroup.first()
    server = Server.objects.create(name="ex1", routing_group=group, last_seen=timezone.now())
    vs = VirtualServer.objects.create(server=server, name="Default SMTP Virtual Server", port=25)
    internet = Connector.objects.create(name="Internet", routing_group=group)
    AddressSpace.objects.create(connector=internet, domain="*", cost=1)
    partner = Connector.objects.create(
        name="Partner", routing_group=group, use_dns=False, smart_hosts="mx.partner.example"
    )
    AddressSpace.objects.create(connector=partner, domain="partner.example", cost=10)
    for connector in (internet, partner):
        connector.bridgeheads.set([vs])
    contoso = AcceptedDomain.objects.create(
        domain="contoso.test", type="authoritative", is_default=True
    )
    return {"internet": internet, "partner": partner, "virtual_server": vs, "contoso": contoso}


def simulate(user: User | None, **query: Any) -> Any:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(f"{URL}?{urlencode(query)}" if query else URL)


def pane(response: Any) -> str:
    html: str = response.content.decode()
    return html[html.index('<main class="pane"') :]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("full_admin", 200),
        ("administrator", 200),
        ("view_only", 200),
        ("outsider", 403),
        ("anonymous", 302),
    ],
)
def test_the_simulator_answers_each_role(
    request: pytest.FixtureRequest, small_topology: dict[str, Any], role: str, expected: int
) -> None:
    user = None if role == "anonymous" else request.getfixturevalue(role)
    assert simulate(user).status_code == expected
    assert simulate(user, recipient="someone@example.net").status_code == expected


def test_the_empty_form_shows_no_route(view_only: User, small_topology: dict[str, Any]) -> None:
    html = pane(simulate(view_only))
    assert 'name="recipient"' in html
    assert "Decisions" not in html


def test_the_specific_address_space_wins_over_the_cheaper_star(
    view_only: User, small_topology: dict[str, Any]
) -> None:
    response = simulate(view_only, sender="me@contoso.test", recipient="bob@Partner.Example")
    html = pane(response)
    assert response.status_code == 200
    partner = small_topology["partner"]
    assert f'<a href="/connectors/{partner.pk}/">Partner</a>' in html
    assert "partner.example (cost 10)" in html
    assert "mx.partner.example" in html
    assert "Default SMTP Virtual Server (ex1)" in html
    assert "Most specific matching address space" in html  # a step's decision
    assert "<td>Cost</td>" in html  # each step is a row


def test_other_domains_take_the_internet_connector_by_dns(
    view_only: User, small_topology: dict[str, Any]
) -> None:
    html = pane(simulate(view_only, sender="me@contoso.test", recipient="x@example.net"))
    assert f'<a href="/connectors/{small_topology["internet"].pk}/">Internet</a>' in html
    assert "DNS MX of example.net" in html


def test_an_authoritative_domain_is_delivered_locally(
    view_only: User, small_topology: dict[str, Any]
) -> None:
    Mailbox.objects.create(address="alice@contoso.test", domain=small_topology["contoso"])
    html = pane(simulate(view_only, recipient="alice@contoso.test"))
    assert "Local delivery" in html


def test_content_restrictions_are_applied_to_size_and_priority(
    view_only: User, small_topology: dict[str, Any]
) -> None:
    Connector.objects.filter(name="Partner").update(max_message_size_kb=100)
    html = pane(simulate(view_only, recipient="bob@partner.example", size_kb=200))
    assert "Unreachable" in html
    assert "over the 100 KB size limit" in html
    assert "Queued</th><td>yes" in html


def test_a_null_sender_is_a_system_message(view_only: User, small_topology: dict[str, Any]) -> None:
    html = pane(simulate(view_only, sender="<>", recipient="bob@example.net"))
    assert "null sender" in html


def test_the_source_virtual_server_can_be_chosen(
    view_only: User, small_topology: dict[str, Any]
) -> None:
    vs = small_topology["virtual_server"]
    response = simulate(view_only, recipient="bob@example.net", virtual_server=vs.pk)
    assert response.status_code == 200
    assert f'<option value="{vs.pk}" selected>' in response.content.decode()


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"recipient": ""}, "recipient", "This field is required."),
        ({"recipient": "not an address"}, "recipient", "is not a valid recipient address"),
        ({"recipient": "a@b.example", "sender": "bad sender"}, "sender", "valid sender address"),
        ({"recipient": "a@b.example", "size_kb": "big"}, "size_kb", "Enter a whole number."),
        ({"recipient": "a@b.example", "size_kb": "-1"}, "size_kb", "greater than or equal to 0"),
        ({"recipient": "a@b.example", "priority": "urgent"}, "priority", "Select a valid choice."),
        ({"recipient": "a@b.example", "virtual_server": "999"}, "virtual_server", "valid choice"),
        ({"recipient": "a@b.example", "virtual_server": "x"}, "virtual_server", "valid choice"),
    ],
)
def test_bad_input_is_a_field_error_not_a_500(
    view_only: User, small_topology: dict[str, Any], query: dict[str, str], field: str, message: str
) -> None:
    response = simulate(view_only, **query)
    html = pane(response)
    assert response.status_code == 400
    assert message in html
    assert "Decisions" not in html
    # The error is shown at its field.
    at = html.index(f'name="{field}"')
    assert "errorlist" in html[at : html.index("</div>", at)]


def test_it_works_with_no_configuration_at_all(view_only: User) -> None:
    response = simulate(view_only, recipient="bob@example.net")
    assert response.status_code == 200
    assert "DNS MX of example.net" in pane(response)
