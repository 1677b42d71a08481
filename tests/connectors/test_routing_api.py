"""GET /api/v1/routing/resolve: the routing simulator of the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from openapi_spec_validator import validate

from connectors.api_routing import RoutingResolveView
from connectors.models import Connector
from connectors.topology import shared_topologies
from servers.models import RoutingGroup
from tests.connectors.test_topology import (
    make_accepted_domain,
    make_connector,
    make_mailbox,
    make_server,
    make_virtual_server,
)

URL = "/api/v1/routing/resolve"

pytestmark = pytest.mark.django_db


@pytest.fixture
def organization() -> dict[str, Any]:
    """mx1 in the First Routing Group, mx2 in a branch group with its own connector."""
    make_accepted_domain("example.com")
    make_mailbox("bob@example.com")
    main = make_virtual_server(make_server("mx1"))
    branch_group = RoutingGroup.objects.create(name="Branch")
    branch = make_virtual_server(make_server("mx2", branch_group))
    internet = make_connector("Internet", [("*", 1)], [main])
    small = make_connector("Partner", [("partner.example", 5)], [main], max_message_size_kb=10)
    branch_only = make_connector(
        "Branch link",
        [("*.com", 1)],
        [branch],
        routing_group=branch_group,
        scope=Connector.Scope.ROUTING_GROUP,
    )
    return {
        "main": main,
        "branch": branch,
        "internet": internet,
        "partner": small,
        "branch_only": branch_only,
    }


def get(user: User | None, api_as: Any, **params: Any) -> Any:
    return api_as(user).get(URL, params)


@pytest.mark.parametrize("person", ["view_only", "administrator", "full_admin"])
def test_every_administrator_can_simulate_a_route(
    person: str, request: pytest.FixtureRequest, api_as: Any, organization: dict[str, Any]
) -> None:
    user = request.getfixturevalue(person)

    response = get(user, api_as, sender="alice@example.com", recipient="carol@Partner.Example")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["kind"] == "connector"
    assert body["connector"] == {"id": organization["partner"].pk, "name": "Partner"}
    assert body["address_space"] == {"domain": "partner.example", "cost": 5}
    assert body["bridgehead"]["virtual_server"] == organization["main"].pk
    assert body["next_hops"] == ["DNS MX of partner.example"]
    assert body["recipient"] == "carol@partner.example"
    assert body["sender"] == "alice@example.com"
    assert body["virtual_server"] == organization["main"].pk
    assert body["queued"] is False
    assert body["steps"][-1]["step"] == "result"
    assert any("Most specific" in s["decision"] for s in body["steps"])


def test_the_outsider_is_refused(outsider: User, api_as: Any) -> None:
    assert get(outsider, api_as, recipient="bob@example.com").status_code == 403


def test_an_anonymous_client_is_refused(api_as: Any) -> None:
    assert get(None, api_as, recipient="bob@example.com").status_code in (401, 403)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_it_only_answers_get(method: str, full_admin: User, api_as: Any) -> None:
    response = getattr(api_as(full_admin), method)(URL, {"recipient": "bob@example.com"})

    assert response.status_code == 405


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({}, "recipient", id="missing-recipient"),
        pytest.param({"recipient": ""}, "recipient", id="blank-recipient"),
        pytest.param({"recipient": "a@b.com", "size": "big"}, "size", id="non-integer-size"),
        pytest.param({"recipient": "a@b.com", "size": "-1"}, "size", id="negative-size"),
        pytest.param(
            {"recipient": "a@b.com", "priority": "urgent"}, "priority", id="unknown-priority"
        ),
        pytest.param({"recipient": "a@b.com", "system": "perhaps"}, "system", id="bad-boolean"),
        pytest.param(
            {"recipient": "a@b.com", "virtual_server": "999999"},
            "virtual_server",
            id="unknown-virtual-server",
        ),
        pytest.param(
            {"recipient": "a@b.com", "virtual_server": "first"},
            "virtual_server",
            id="non-integer-virtual-server",
        ),
        pytest.param(
            {"recipient": "a@b.com", "spread_key": "x"}, "spread_key", id="bad-spread-key"
        ),
        pytest.param({"recipient": "a\x00@b.com"}, "recipient", id="null-character"),
    ],
)
def test_bad_parameters_are_400_with_field_messages(
    params: dict[str, str], field: str, view_only: User, api_as: Any, organization: Any
) -> None:
    response = get(view_only, api_as, **params)

    assert response.status_code == 400, response.content
    assert field in response.json()


def test_an_invalid_address_is_a_rejecting_route_not_an_error(
    view_only: User, api_as: Any, organization: Any
) -> None:
    response = get(view_only, api_as, recipient="not an address")

    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "reject"
    assert body["status"].startswith("501 5.1.3")
    assert body["domain"] == ""
    assert body["connector"] is None


def test_an_unknown_local_mailbox_is_rejected(
    view_only: User, api_as: Any, organization: Any
) -> None:
    body = get(view_only, api_as, recipient="nobody@example.com").json()

    assert body["kind"] == "reject"
    assert body["status"].startswith("550 5.1.1")
    assert body["accepted_domain"] == {"domain": "example.com", "type": "authoritative"}


def test_a_known_local_mailbox_is_delivered_locally(
    view_only: User, api_as: Any, organization: Any
) -> None:
    body = get(view_only, api_as, recipient="BOB@example.com", sender="").json()

    assert body["kind"] == "local"
    assert body["connector"] is None


def test_size_over_a_connector_limit_leaves_no_route(
    view_only: User, api_as: Any, organization: Any
) -> None:
    body = get(view_only, api_as, recipient="x@partner.example", size=11 * 1024).json()

    assert body["kind"] == "unreachable"
    assert body["queued"] is True
    assert body["status"].startswith("554 5.4.4")
    assert any("size limit" in s["decision"] for s in body["steps"])


def test_the_virtual_server_decides_the_routing_group(
    view_only: User, api_as: Any, organization: dict[str, Any]
) -> None:
    from_main = get(view_only, api_as, recipient="x@shop.com").json()
    from_branch = get(
        view_only, api_as, recipient="x@shop.com", virtual_server=organization["branch"].pk
    ).json()

    assert from_main["connector"]["name"] == "Internet"
    assert from_branch["connector"]["name"] == "Branch link"
    assert from_branch["virtual_server"] == organization["branch"].pk


def test_priority_system_and_spread_key_reach_the_routing(
    view_only: User, api_as: Any, organization: Any
) -> None:
    body = get(
        view_only,
        api_as,
        recipient="x@shop.net",
        sender="alice@example.com",
        priority="low",
        system="true",
        size="2048",
        spread_key="3",
    ).json()

    assert body["kind"] == "connector"
    assert body["steps"][1] == {
        "step": "message",
        "decision": "From <alice@example.com>: a system message, priority low, 2048 bytes.",
    }


def test_the_openapi_schema_describes_parameters_and_response() -> None:
    generator = SchemaGenerator(
        patterns=[path("api/v1/routing/resolve", RoutingResolveView.as_view())]
    )
    schema = generator.get_schema(request=None, public=True)
    validate(schema)

    operation = schema["paths"]["/api/v1/routing/resolve"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) >= {
        "recipient",
        "sender",
        "size",
        "priority",
        "system",
        "virtual_server",
    }
    assert parameters["recipient"]["required"] is True
    assert parameters["size"]["schema"]["type"] == "integer"
    assert parameters["priority"]["schema"]["enum"] == ["high", "normal", "low"]
    assert parameters["virtual_server"]["schema"]["type"] == "integer"
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    route = schema["components"]["schemas"][reference.rpartition("/")[2]]
    assert {"kind", "connector", "bridgehead", "next_hops", "queued", "status", "steps"} <= set(
        route["properties"]
    )
    assert "400" in operation["responses"]


def test_the_project_schema_lists_the_endpoint(view_only: User, api_as: Any) -> None:
    response = api_as(view_only).get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert "/api/v1/routing/resolve" in response.json()["paths"]


def test_an_edit_through_the_api_is_routed_by_the_next_answer(
    administrator: User, api_as: Any, organization: dict[str, Any]
) -> None:
    shared_topologies.clear()
    api = api_as(administrator)
    before = get(administrator, api_as, recipient="carol@new.example").json()
    again = get(administrator, api_as, recipient="carol@new.example").json()
    builds = shared_topologies.builds

    answer = api.patch(
        f"/api/v1/connectors/{organization['partner'].pk}/",
        {"address_spaces": [{"domain": "new.example", "cost": 1}]},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    after = get(administrator, api_as, recipient="carol@new.example").json()

    assert before["connector"]["name"] == again["connector"]["name"] == "Internet"
    assert builds == 1  # the second answer reused the snapshot of the first
    assert after["connector"] == {"id": organization["partner"].pk, "name": "Partner"}
    assert after["address_space"] == {"domain": "new.example", "cost": 1}
    assert shared_topologies.builds == 2
