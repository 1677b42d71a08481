"""Accepted domains (which mail the organization receives) and local mailboxes."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from servers.models import AcceptedDomain, Mailbox

pytestmark = pytest.mark.django_db

AUTHORITATIVE = AcceptedDomain.Type.AUTHORITATIVE
INTERNAL_RELAY = AcceptedDomain.Type.INTERNAL_RELAY
EXTERNAL_RELAY = AcceptedDomain.Type.EXTERNAL_RELAY


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


def accepted(domain: str, type: str = AUTHORITATIVE, **fields: Any) -> AcceptedDomain:
    return AcceptedDomain.objects.create(domain=domain, type=type, **fields)


# --- accepted domains -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("Example.COM.", "example.com", id="upper-case-trailing-dot"),
        pytest.param("Bücher.DE", "xn--bcher-kva.de", id="idna"),
        pytest.param("*.Example.com", "*.example.com", id="wildcard-sub-domains"),
        pytest.param("*.bücher.de", "*.xn--bcher-kva.de", id="wildcard-idna"),
    ],
)
def test_an_accepted_domain_is_stored_in_a_normal_form(typed: str, stored: str) -> None:
    domain = AcceptedDomain(domain=typed)
    domain.full_clean()
    assert domain.domain == stored


@pytest.mark.parametrize("type", [AUTHORITATIVE, INTERNAL_RELAY, EXTERNAL_RELAY])
def test_every_type_of_accepted_domain_is_valid(type: str) -> None:
    AcceptedDomain(domain="example.com", type=type).full_clean()


def test_an_accepted_domain_is_authoritative_unless_told_otherwise() -> None:
    assert AcceptedDomain(domain="example.com").type == AUTHORITATIVE


def test_it_refuses_an_unknown_type() -> None:
    assert "type" in errors_of(AcceptedDomain(domain="example.com", type="local"))


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("exa mple.com", id="space"),
        pytest.param("*example.com", id="star-without-dot"),
        pytest.param("mail.*.example.com", id="star-in-the-middle"),
        pytest.param("192.0.2.1", id="ip"),
        pytest.param("user@example.com", id="address"),
    ],
)
def test_it_refuses_a_malformed_accepted_domain(typed: str) -> None:
    assert "domain" in errors_of(AcceptedDomain(domain=typed))


def test_it_refuses_star_because_that_is_an_open_relay() -> None:
    errors = errors_of(AcceptedDomain(domain=" * ", type=EXTERNAL_RELAY))
    assert "open relay" in errors["domain"][0]


def test_it_refuses_a_domain_that_exists_in_another_spelling() -> None:
    accepted("example.com")
    assert "domain" in errors_of(AcceptedDomain(domain="EXAMPLE.com."))


def test_the_default_domain_cannot_be_a_wildcard() -> None:
    assert "is_default" in errors_of(AcceptedDomain(domain="*.example.com", is_default=True))
    AcceptedDomain(domain="example.com", is_default=True).full_clean()


def test_there_is_only_one_default_domain() -> None:
    accepted("example.com", is_default=True)
    errors = errors_of(AcceptedDomain(domain="example.org", is_default=True))
    assert "one_default_domain" in errors["__all__"][0]
    AcceptedDomain(domain="example.org", is_default=False).full_clean()


def test_the_database_refuses_a_second_default_domain() -> None:
    accepted("example.com", is_default=True)
    accepted("example.net")
    accepted("example.org")
    with pytest.raises(IntegrityError), transaction.atomic():
        accepted("example.info", is_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        AcceptedDomain.objects.filter(domain="example.org").update(is_default=True)


def test_the_database_refuses_a_duplicate_domain() -> None:
    accepted("example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        accepted("example.com", type=EXTERNAL_RELAY)


# --- matching: the most specific accepted domain wins ----------------------------------------

DOMAINS = [
    ("example.com", AUTHORITATIVE),
    ("*.example.com", INTERNAL_RELAY),
    ("sub.example.com", EXTERNAL_RELAY),
    ("*.sub.example.com", AUTHORITATIVE),
    ("example.org", AUTHORITATIVE),
]


@pytest.mark.parametrize(
    ("recipient_domain", "expected"),
    [
        pytest.param("example.com", "example.com", id="exact"),
        pytest.param("mail.example.com", "*.example.com", id="wildcard"),
        pytest.param("sub.example.com", "sub.example.com", id="exact-beats-wildcard"),
        pytest.param("a.sub.example.com", "*.sub.example.com", id="deeper-wildcard-wins"),
        pytest.param("a.b.sub.example.com", "*.sub.example.com", id="deeper-still"),
        pytest.param("example.net", None, id="not-accepted"),
        pytest.param("badexample.com", None, id="lookalike"),
        pytest.param("com", None, id="parent"),
    ],
)
@pytest.mark.parametrize("from_database", [True, False], ids=["from-database", "from-a-list"])
def test_the_most_specific_accepted_domain_matches(
    recipient_domain: str, expected: str | None, from_database: bool
) -> None:
    domains = [accepted(name, type) for name, type in DOMAINS]
    match = AcceptedDomain.match(recipient_domain, None if from_database else domains)
    assert (match.domain if match else None) == expected


# --- mailboxes --------------------------------------------------------------------------------


def test_a_mailbox_in_an_authoritative_domain_is_accepted_and_lower_cased() -> None:
    domain = accepted("example.com")
    mailbox = Mailbox(address=" Jane.Doe@Example.COM ")
    mailbox.full_clean()
    assert mailbox.address == "jane.doe@example.com"
    assert mailbox.domain == domain
    mailbox.save()


def test_a_mailbox_in_an_idna_domain_is_stored_in_punycode() -> None:
    accepted("bücher.de".encode("idna").decode())
    mailbox = Mailbox(address="info@Bücher.DE")
    mailbox.full_clean()
    assert mailbox.address == "info@xn--bcher-kva.de"


def test_a_mailbox_in_a_wildcard_authoritative_domain_is_accepted() -> None:
    domain = accepted("*.example.org")
    mailbox = Mailbox(address="user@branch.example.org")
    mailbox.full_clean()
    assert mailbox.domain == domain


@pytest.mark.parametrize("type", [INTERNAL_RELAY, EXTERNAL_RELAY])
def test_a_mailbox_in_a_relay_domain_is_refused(type: str) -> None:
    accepted("example.com", type)
    assert "address" in errors_of(Mailbox(address="user@example.com"))


def test_a_mailbox_in_a_domain_that_is_not_accepted_is_refused() -> None:
    accepted("example.com")
    assert "address" in errors_of(Mailbox(address="user@example.org"))


def test_the_most_specific_domain_decides_whether_a_mailbox_may_exist() -> None:
    accepted("*.example.com", AUTHORITATIVE)
    accepted("relay.example.com", INTERNAL_RELAY)
    assert "address" in errors_of(Mailbox(address="user@relay.example.com"))
    Mailbox(address="user@other.example.com").full_clean()


@pytest.mark.parametrize(
    "typed", ["", "user", "user@", "a@b@example.com", "us er@example.com", "user@192.0.2.1"]
)
def test_a_malformed_mailbox_address_is_refused(typed: str) -> None:
    accepted("example.com")
    assert "address" in errors_of(Mailbox(address=typed))


def test_a_duplicate_mailbox_is_refused_in_any_spelling() -> None:
    accepted("example.com")
    first = Mailbox(address="user@example.com")
    first.full_clean()
    first.save()
    assert "address" in errors_of(Mailbox(address="USER@Example.com."))
    first.full_clean()  # a saved mailbox is no duplicate of itself


def test_the_database_refuses_a_duplicate_mailbox() -> None:
    domain = accepted("example.com")
    Mailbox.objects.create(address="user@example.com", domain=domain)
    with pytest.raises(IntegrityError), transaction.atomic():
        Mailbox.objects.create(address="user@example.com", domain=domain)


@pytest.mark.parametrize("type", [INTERNAL_RELAY, EXTERNAL_RELAY])
def test_a_domain_with_mailboxes_cannot_stop_being_authoritative(type: str) -> None:
    domain = accepted("example.com")
    Mailbox.objects.create(address="user@example.com", domain=domain)
    domain.type = type
    assert "type" in errors_of(domain)


@pytest.mark.parametrize("type", [INTERNAL_RELAY, EXTERNAL_RELAY])
def test_a_domain_without_mailboxes_may_stop_being_authoritative(type: str) -> None:
    domain = accepted("example.com")
    Mailbox.objects.create(address="user@example.com", domain=accepted("example.org"))
    domain.type = type
    domain.full_clean()


def test_a_domain_with_mailboxes_may_stay_authoritative() -> None:
    domain = accepted("example.com")
    Mailbox.objects.create(address="user@example.com", domain=domain)
    domain.is_default = True
    domain.full_clean()


@pytest.mark.parametrize(
    "new_name",
    [
        pytest.param("example.org", id="another-domain"),
        pytest.param("*.example.com", id="its-sub-domains-only"),
        pytest.param("mail.example.com", id="a-sub-domain"),
    ],
)
def test_a_domain_with_mailboxes_cannot_be_renamed_away_from_them(new_name: str) -> None:
    domain = accepted("example.com")
    Mailbox.objects.create(address="user@example.com", domain=domain)
    domain.domain = new_name
    assert "domain" in errors_of(domain)


def test_a_domain_with_mailboxes_may_be_respelled_or_widened() -> None:
    domain = accepted("*.example.com")
    Mailbox.objects.create(address="user@mail.example.com", domain=domain)
    domain.domain = "*.EXAMPLE.com."
    domain.full_clean()
    domain.domain = "*.com"
    domain.full_clean()
