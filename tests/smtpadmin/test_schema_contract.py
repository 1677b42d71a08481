"""What /api/schema/ promises beyond the resources: the error answers of every operation
(added by a postprocessing hook, so new endpoints get them too), request bodies that refuse
unknown fields, the limits of the list filters, enums for states, and nullable values."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from rest_framework import generics, serializers
from rest_framework.response import Response

from smtpadmin.api_schema import NOT_BLANK

pytestmark = pytest.mark.django_db

METHODS = {"get", "post", "put", "patch", "delete"}


@functools.cache
def _schema_text() -> bytes:
    return Client().get("/api/schema/", {"format": "json"}).content


@pytest.fixture
def schema() -> dict[str, Any]:
    return json.loads(_schema_text())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path_, method, operation)
        for path_, methods in schema["paths"].items()
        for method, operation in methods.items()
        if method in METHODS
    ]


def test_every_operation_documents_unauthenticated_and_forbidden(schema: dict[str, Any]) -> None:
    for path_, method, operation in operations(schema):
        responses = operation["responses"]
        assert "401" in responses, (method, path_)
        if path_ != "/api/v1/auth/token/":
            assert "403" in responses, (method, path_)
    token = schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]
    assert "403" not in token
    assert {"400", "429"} <= set(token)


def test_operations_on_one_object_document_not_found(schema: dict[str, Any]) -> None:
    for path_, method, operation in operations(schema):
        if "{" in path_:
            assert "404" in operation["responses"], (method, path_)


def test_operations_with_a_body_document_the_field_errors(schema: dict[str, Any]) -> None:
    for path_, method, operation in operations(schema):
        if "requestBody" in operation:
            responses = operation["responses"]
            assert {"400", "413", "415"} <= set(responses), (method, path_)
            body = responses["400"]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ValidationError"}


def test_deletes_and_changes_document_the_conflict(schema: dict[str, Any]) -> None:
    for path_, method, operation in operations(schema):
        if method in ("put", "patch", "delete") and path_.endswith("{id}/"):
            assert "409" in operation["responses"], (method, path_)
    bulk = schema["paths"]["/api/v1/messages/bulk/"]["post"]["responses"]
    assert "409" not in bulk


def test_a_list_documents_a_page_that_does_not_exist(schema: dict[str, Any]) -> None:
    listing = schema["paths"]["/api/v1/virtual-servers/"]["get"]
    assert "404" in listing["responses"]
    page = next(p for p in listing["parameters"] if p["name"] == "page")
    assert page["allowEmptyValue"] is True


class Note(serializers.Serializer):
    text = serializers.CharField()


class NoteView(generics.GenericAPIView):
    serializer_class = Note

    def put(self, request: Any, pk: int) -> Response:
        return Response({})


def test_a_new_endpoint_gets_the_error_answers_without_annotations() -> None:
    generator = SchemaGenerator(patterns=[path("notes/<int:pk>/", NoteView.as_view())])

    generated = generator.get_schema(request=None, public=True)

    (operation,) = generated["paths"].values()
    assert {"400", "401", "403", "404", "409", "415"} <= set(operation["put"]["responses"])
    assert "ValidationError" in generated["components"]["schemas"]


def test_request_bodies_refuse_unknown_fields(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in (
        "VirtualServerRequest",
        "PatchedVirtualServerUpdateRequest",
        "ConnectorRequest",
        "AddressSpaceRequest",
        "UserRequest",
        "OrganizationRequest",
        "BulkActionRequest",
        "DeleteOptionsRequest",
    ):
        assert components[name]["additionalProperties"] is False, name


def test_create_only_fields_are_not_in_the_bodies_of_changes(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert "profile" in components["VirtualServerRequest"]["properties"]
    for name in ("VirtualServerUpdateRequest", "PatchedVirtualServerUpdateRequest"):
        assert "profile" not in components[name]["properties"]
    for name in ("CertificateUpdateRequest", "PatchedCertificateUpdateRequest"):
        assert "generate_self_signed" not in components[name]["properties"]
    put = schema["paths"]["/api/v1/virtual-servers/{id}/"]["put"]
    answer = put["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/VirtualServer"}


def test_text_that_may_not_be_blank_refuses_whitespace(schema: dict[str, Any]) -> None:
    name = schema["components"]["schemas"]["RoutingGroupRequest"]["properties"]["name"]
    assert name["pattern"] == NOT_BLANK
    assert name["minLength"] == 1
    assert "pattern" not in schema["components"]["schemas"]["RoutingGroup"]["properties"]["name"]


def test_passwords_say_how_short_they_may_be(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert components["UserRequest"]["properties"]["password"]["minLength"] == 8
    assert components["SmtpCredentialRequest"]["properties"]["password"]["minLength"] == 8


def test_configuration_lists_are_lists_of_text(schema: dict[str, Any]) -> None:
    organization = schema["components"]["schemas"]["OrganizationRequest"]["properties"]
    for field in ("blocked_senders", "global_deny_list", "block_list_providers"):
        assert organization[field]["type"] == "array", field
        assert organization[field]["items"]["type"] == "string", field


def test_list_filters_document_their_limits_and_types(schema: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/messages/"]["get"]["parameters"]}
    assert parameters["queue_id"]["schema"]["maxLength"] == 20
    assert parameters["older_than_minutes"]["schema"]["minimum"] == 0
    assert parameters["older_than_minutes"]["schema"]["maximum"] == 10 * 366 * 24 * 60
    assert parameters["queue_id"]["allowEmptyValue"] is True
    listing = schema["paths"]["/api/v1/virtual-servers/"]["get"]["parameters"]
    port = next(p for p in listing if p["name"] == "port")
    assert port["schema"]["type"] == "integer"


def test_states_and_kinds_are_enums(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]

    def enum(component: str, field: str) -> list[str]:
        ref = components[component]["properties"][field]
        ref = ref.get("allOf", [ref])[0]["$ref"].rsplit("/", 1)[1]
        return list(components[ref]["enum"])

    assert "frozen" in enum("Queue", "state")
    assert set(enum("Message", "state")) == {
        "ready", "retry", "active", "frozen", "delivered", "failed", "deleted", "completed"
    }  # fmt: skip
    assert "deferred" in enum("Recipient", "state")
    assert "done" in enum("QueueEntry", "state")
    assert "dsn_sent" in enum("TrackingEvent", "kind")
    assert "never_seen" in enum("Server", "status")
    assert set(enum("BulkActionRequest", "action")) == {"freeze", "unfreeze", "delete"}


def test_the_bulk_filter_lists_the_filters(schema: dict[str, Any]) -> None:
    filters = schema["components"]["schemas"]["BulkActionRequest"]["properties"]["filter"]
    assert filters["minProperties"] == 1
    assert filters["additionalProperties"] is False
    assert filters["properties"]["queue"]["type"] == "integer"
    assert filters["properties"]["sender"]["type"] == "string"
    assert "frozen" in filters["properties"]["state"]["enum"]


def test_a_message_no_longer_waiting_has_no_expiry(schema: dict[str, Any]) -> None:
    expires_at = schema["components"]["schemas"]["Message"]["properties"]["expires_at"]
    assert expires_at["nullable"] is True


def test_lists_that_may_not_be_empty_say_so(schema: dict[str, Any]) -> None:
    connector = schema["components"]["schemas"]["ConnectorRequest"]["properties"]
    assert connector["bridgeheads"]["minItems"] == 1
    assert connector["address_spaces"]["minItems"] == 1


def test_optional_query_parameters_may_be_sent_empty(schema: dict[str, Any]) -> None:
    resolve = schema["paths"]["/api/v1/routing/resolve"]["get"]["parameters"]
    priority = next(p for p in resolve if p["name"] == "priority")
    recipient = next(p for p in resolve if p["name"] == "recipient")
    assert priority["allowEmptyValue"] is True
    assert "allowEmptyValue" not in recipient
    content = schema["paths"]["/api/v1/messages/{id}/content/"]["get"]["parameters"]
    assert next(p for p in content if p["name"] == "format")["allowEmptyValue"] is True


def test_times_of_day_and_user_names_are_described_as_python_reads_them(
    schema: dict[str, Any],
) -> None:
    components = schema["components"]["schemas"]
    daily = components["Connector"]["properties"]["schedule_daily_time"]
    assert "format" not in daily
    assert re.match(daily["pattern"], "11:55:21.845000")
    username = components["UserRequest"]["properties"]["username"]
    assert username["pattern"] == NOT_BLANK  # letters of every script, as Django takes them
