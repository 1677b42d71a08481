"""The OpenAPI description of /api/v1/: a valid OpenAPI 3 document at /api/schema/ with every
DESIGN resource, generated without warnings, and browsable at /api/docs/."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

CONFIGURATION = [
    "routing-groups",
    "servers",
    "virtual-servers",
    "accepted-domains",
    "mailboxes",
    "smtp-credentials",
    "certificates",
    "connectors",
    "users",
]
RELAY = ["queues", "messages", "tracking-events"]


@functools.cache
def _schema_text() -> bytes:
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.content


@pytest.fixture
def schema() -> dict[str, Any]:
    return json.loads(_schema_text())


def test_the_schema_is_a_valid_openapi_3_document(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_the_schema_is_served_as_json_when_asked_by_accept_header(schema: dict[str, Any]) -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert response.json() == schema


@pytest.mark.parametrize("resource", CONFIGURATION)
def test_each_configuration_resource_has_its_list_and_detail_paths(
    schema: dict[str, Any], resource: str
) -> None:
    paths = schema["paths"]
    assert set(paths[f"/api/v1/{resource}/"]) >= {"get", "post"}
    assert set(paths[f"/api/v1/{resource}/{{id}}/"]) >= {"get", "put", "patch", "delete"}


def test_the_other_design_paths_are_there(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for action in ("start", "stop", "pause"):
        assert set(paths[f"/api/v1/virtual-servers/{{id}}/{action}/"]) == {"post"}
    assert set(paths["/api/v1/audit-log/"]) == {"get"}
    assert set(paths["/api/v1/audit-log/{id}/"]) == {"get"}
    assert set(paths["/api/v1/auth/token/"]) == {"post"}
    assert set(paths["/api/v1/organization/"]) == {"get", "put", "patch"}
    assert "get" in paths["/api/v1/routing/resolve"]


@pytest.mark.parametrize("resource", RELAY)
def test_the_relay_resources_of_design_are_there(schema: dict[str, Any], resource: str) -> None:
    assert set(schema["paths"][f"/api/v1/{resource}/"]) == {"get"}
    assert set(schema["paths"][f"/api/v1/{resource}/{{id}}/"]) == {"get"}


def test_the_relay_actions_of_design_are_there(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for action in ("freeze", "unfreeze", "retry", "delete-messages"):
        assert set(paths[f"/api/v1/queues/{{id}}/{action}/"]) == {"post"}
    for action in ("freeze", "unfreeze", "delete"):
        assert set(paths[f"/api/v1/messages/{{id}}/{action}/"]) == {"post"}
    assert set(paths["/api/v1/messages/bulk/"]) == {"post"}
    assert set(paths["/api/v1/messages/{id}/content/"]) == {"get"}
    assert set(paths["/api/v1/tracking-events/history/"]) == {"get"}


def test_the_contract_fields_are_described(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for component, fields in {
        "VirtualServer": {"id", "name", "server", "ip_address", "port", "desired_state", "state"},
        "Connector": {"id", "name", "address_spaces", "use_dns", "smart_hosts", "bridgeheads"},
        "AcceptedDomain": {"id", "domain", "type"},
        "Mailbox": {"id", "address"},
        "SmtpCredential": {"id", "username"},
        "Queue": {"id", "name", "state", "message_count"},
        "Message": {"id", "sender", "recipients", "state"},
    }.items():
        assert fields <= set(components[component]["properties"]), component
    assert components["VirtualServer"]["properties"]["ip_address"].get("nullable") is True
    assert "password" in components["SmtpCredentialRequest"]["properties"]


def test_token_authentication_is_described(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["type"] == "apiKey"
    assert schemes["tokenAuth"]["in"] == "header"
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert "cookieAuth" in schemes
    token_request = schema["paths"]["/api/v1/auth/token/"]["post"]["requestBody"]
    ref = token_request["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][ref]["required"]) == {"username", "password"}


def test_the_generator_has_no_warnings(tmp_path: Path) -> None:
    """The YAML the management command writes is validated by the command itself."""
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert yaml.safe_load(target.read_text())["info"]["title"] == "smtpadmin API"


def test_the_interactive_docs_answer_a_signed_in_user(administrator: User) -> None:
    client = Client()
    client.force_login(administrator)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_component_descriptions_describe_resources_not_implementation(
    schema: dict[str, Any],
) -> None:
    for name, component in schema["components"]["schemas"].items():
        description = component.get("description", "")
        assert "ModelSerializer" not in description, name
        assert "Refuse fields" not in description, name
    assert "TokenRequestRequest" not in schema["components"]["schemas"]
