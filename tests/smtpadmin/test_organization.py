"""The one organization and its global settings (message delivery defaults, filtering)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from smtpadmin.models import Organization

pytestmark = pytest.mark.django_db


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


@pytest.fixture
def organization() -> Organization:
    return Organization.get()


def test_there_is_one_organization_however_often_it_is_asked_for() -> None:
    first = Organization.get()
    second = Organization.get()
    assert first.pk == second.pk == 1
    assert Organization.objects.count() == 1


def test_saving_another_organization_changes_the_one_there_is(organization: Organization) -> None:
    Organization(name="Second Organization").save()
    assert Organization.objects.count() == 1
    assert Organization.get().name == "Second Organization"


def test_the_database_refuses_a_second_organization(organization: Organization) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.bulk_create([Organization(id=2, name="Rogue")])
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(pk=1).update(id=2)


def test_the_organization_has_the_exchange_defaults(organization: Organization) -> None:
    assert organization.sending_size_limit_kb == 10240
    assert organization.receiving_size_limit_kb == 10240
    assert organization.recipients_limit == 5000
    assert organization.message_tracking_enabled is True
    assert organization.tracking_retention_days == 7
    assert organization.outbound_mail_disabled is False
    organization.full_clean()


# --- connection filtering: global accept and deny lists ---------------------------------------


@pytest.mark.parametrize("field", ["global_accept_list", "global_deny_list"])
def test_a_global_list_holds_addresses_and_subnets_in_a_normal_form(
    organization: Organization, field: str
) -> None:
    setattr(
        organization,
        field,
        ["192.0.2.1", "198.51.100.7/24", "2001:DB8::/32", "192.0.2.1/32", " 203.0.113.5 "],
    )
    organization.full_clean()
    assert getattr(organization, field) == [
        "192.0.2.1",
        "198.51.100.0/24",
        "2001:db8::/32",
        "203.0.113.5",
    ]


@pytest.mark.parametrize("field", ["global_accept_list", "global_deny_list"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["mail.example.com"], id="a-domain"),
        pytest.param(["*"], id="star"),
        pytest.param(["192.0.2.0/33"], id="bad-prefix"),
        pytest.param(["999.0.2.1"], id="bad-address"),
        pytest.param([""], id="empty-entry"),
        pytest.param("192.0.2.1", id="not-a-list"),
        pytest.param([42], id="a-number"),
    ],
)
def test_a_global_list_refuses_anything_but_addresses_and_subnets(
    organization: Organization, field: str, value: object
) -> None:
    setattr(organization, field, value)
    assert field in errors_of(organization)


# --- sender and recipient filtering -----------------------------------------------------------


@pytest.mark.parametrize("field", ["blocked_senders", "blocked_recipients"])
def test_blocked_addresses_are_normalised(organization: Organization, field: str) -> None:
    setattr(organization, field, ["Spammer@Example.COM", "@Bad.example", "*@Bücher.de"])
    organization.full_clean()
    assert getattr(organization, field) == [
        "spammer@example.com",
        "*@bad.example",
        "*@xn--bcher-kva.de",
    ]


@pytest.mark.parametrize("field", ["blocked_senders", "blocked_recipients"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["not an address"], id="not-an-address"),
        pytest.param(["*"], id="star"),
        pytest.param(["*@*.example.com"], id="wildcard-domain"),
        pytest.param(["user@192.0.2.1"], id="ip-domain"),
        pytest.param([None], id="none-inside"),
        pytest.param("spammer@example.com", id="not-a-list"),
    ],
)
def test_blocked_addresses_refuse_what_is_not_an_address(
    organization: Organization, field: str, value: object
) -> None:
    setattr(organization, field, value)
    assert field in errors_of(organization)


def test_block_list_providers_are_dns_suffixes(organization: Organization) -> None:
    organization.block_list_providers = ["zen.spamhaus.org", "bl.spamcop.net"]
    organization.full_clean()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([""], id="empty-entry"),
        pytest.param(["  "], id="blank-entry"),
        pytest.param([1], id="a-number"),
        pytest.param("zen.spamhaus.org", id="not-a-list"),
    ],
)
def test_block_list_providers_refuse_garbage(organization: Organization, value: object) -> None:
    organization.block_list_providers = value
    assert "block_list_providers" in errors_of(organization)


def test_every_bad_list_is_reported_at_once(organization: Organization) -> None:
    organization.global_accept_list = ["mail.example.com"]
    organization.global_deny_list = ["nope"]
    organization.blocked_senders = ["nope"]
    organization.blocked_recipients = ["nope"]
    organization.block_list_providers = [""]
    assert set(errors_of(organization)) >= {
        "global_accept_list",
        "global_deny_list",
        "blocked_senders",
        "blocked_recipients",
        "block_list_providers",
    }


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("sending_size_limit_kb", None, True),
        ("sending_size_limit_kb", 1, True),
        ("sending_size_limit_kb", 0, False),
        ("receiving_size_limit_kb", None, True),
        ("receiving_size_limit_kb", 0, False),
        ("recipients_limit", None, True),
        ("recipients_limit", 0, False),
        ("tracking_retention_days", 1, True),
        ("tracking_retention_days", 3650, True),
        ("tracking_retention_days", 0, False),
        ("tracking_retention_days", 3651, False),
    ],
)
def test_global_limits_are_blank_or_in_range(
    organization: Organization, field: str, value: int | None, valid: bool
) -> None:
    setattr(organization, field, value)
    if valid:
        organization.full_clean()
    else:
        assert field in errors_of(organization)
