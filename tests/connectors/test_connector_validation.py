"""The rules of an SMTP connector and its address spaces, through ``full_clean()`` and, for the
address spaces, through the database constraints too."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from connectors.models import AddressSpace, Connector
from servers.models import RoutingGroup
from smtpadmin.validators import SCHEDULE_SLOTS

pytestmark = pytest.mark.django_db

MakeConnector = Callable[..., Connector]
EIGHT_TO_NINE_DAILY = ("0" * 32 + "1" * 4 + "0" * 60) * 7


@pytest.fixture
def connector() -> MakeConnector:
    """``connector(**fields)``: an unsaved connector routing by DNS."""

    def make(**fields: Any) -> Connector:
        return Connector(**{"name": "Internet", "routing_group": RoutingGroup.first(), **fields})

    return make


@pytest.fixture
def saved(connector: MakeConnector) -> Connector:
    instance = connector()
    instance.save()
    return instance


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


def test_a_connector_with_the_defaults_is_valid(connector: MakeConnector) -> None:
    instance = connector()
    instance.full_clean()
    assert instance.use_dns is True
    assert instance.schedule_mode == "always"


def test_it_refuses_a_second_connector_with_the_same_name(saved: Connector) -> None:
    other = Connector(name="Internet", routing_group=RoutingGroup.first())
    assert "name" in errors_of(other)


# --- General: DNS or smart hosts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("Relay.Example.com", "relay.example.com", id="host"),
        pytest.param("relay.example.com:587", "relay.example.com:587", id="host-port"),
        pytest.param("[192.0.2.1]", "[192.0.2.1]", id="ipv4-literal"),
        pytest.param("[IPv6:2001:DB8::1]:25", "[IPv6:2001:db8::1]:25", id="ipv6-literal-port"),
        pytest.param(
            "a.example.com; [192.0.2.1]:2525 ,b.example.com",
            "a.example.com;[192.0.2.1]:2525;b.example.com",
            id="several",
        ),
        pytest.param("relay.bücher.de", "relay.xn--bcher-kva.de", id="idna"),
    ],
)
def test_smart_hosts_are_stored_in_a_normal_form(
    connector: MakeConnector, typed: str, stored: str
) -> None:
    instance = connector(use_dns=False, smart_hosts=typed)
    instance.full_clean()
    assert instance.smart_hosts == stored


@pytest.mark.parametrize("use_dns", [False, True], ids=["smart-host-route", "dns-route"])
@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("192.0.2.1", id="unbracketed-ip"),
        pytest.param("[192.0.2.1", id="missing-bracket"),
        pytest.param("relay.example.com:0", id="port-0"),
        pytest.param("relay.example.com:65536", id="port-65536"),
        pytest.param("relay.example.com:abc", id="port-abc"),
        pytest.param("2001:db8::1", id="bare-ipv6"),
        pytest.param("*.example.com", id="wildcard"),
    ],
)
def test_it_refuses_malformed_smart_hosts(
    connector: MakeConnector, use_dns: bool, typed: str
) -> None:
    assert "smart_hosts" in errors_of(connector(use_dns=use_dns, smart_hosts=typed))


@pytest.mark.parametrize("typed", ["", "  ", ";"])
def test_forwarding_to_smart_hosts_needs_at_least_one(connector: MakeConnector, typed: str) -> None:
    assert "smart_hosts" in errors_of(connector(use_dns=False, smart_hosts=typed))


def test_routing_by_dns_needs_no_smart_host(connector: MakeConnector) -> None:
    connector(use_dns=True, smart_hosts="").full_clean()


# --- Delivery Options: schedules --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["always", "never", "every_1h", "every_2h", "every_4h"])
def test_a_schedule_without_a_time_or_grid_is_valid(connector: MakeConnector, mode: str) -> None:
    connector(schedule_mode=mode).full_clean()


def test_it_refuses_an_unknown_schedule_mode(connector: MakeConnector) -> None:
    assert "schedule_mode" in errors_of(connector(schedule_mode="hourly"))


@pytest.mark.parametrize("prefix", ["", "oversize_"], ids=["schedule", "oversize-schedule"])
def test_a_daily_schedule_needs_a_time_of_day(connector: MakeConnector, prefix: str) -> None:
    assert f"{prefix}schedule_daily_time" in errors_of(
        connector(**{f"{prefix}schedule_mode": "daily", "oversize_schedule_enabled": True})
    )
    connector(
        **{
            f"{prefix}schedule_mode": "daily",
            f"{prefix}schedule_daily_time": datetime.time(22, 30),
            "oversize_schedule_enabled": True,
        }
    ).full_clean()


@pytest.mark.parametrize("prefix", ["", "oversize_"], ids=["schedule", "oversize-schedule"])
@pytest.mark.parametrize(
    "grid",
    [
        pytest.param("1" * SCHEDULE_SLOTS, id="always"),
        pytest.param(EIGHT_TO_NINE_DAILY, id="08:00-09:00"),
        pytest.param("0" * (SCHEDULE_SLOTS - 1) + "1", id="sunday-23:45"),
    ],
)
def test_a_custom_schedule_accepts_a_well_formed_grid(
    connector: MakeConnector, prefix: str, grid: str
) -> None:
    connector(
        **{
            f"{prefix}schedule_mode": "custom",
            f"{prefix}schedule_grid": grid,
            "oversize_schedule_enabled": True,
        }
    ).full_clean()


@pytest.mark.parametrize("prefix", ["", "oversize_"], ids=["schedule", "oversize-schedule"])
@pytest.mark.parametrize(
    "grid",
    [
        pytest.param("", id="empty"),
        pytest.param("1" * (SCHEDULE_SLOTS - 1), id="too-short"),
        pytest.param("1" * 7 * 24, id="hourly-grid"),
        pytest.param("1" * (SCHEDULE_SLOTS - 1) + "x", id="a-letter"),
        pytest.param("0" * SCHEDULE_SLOTS, id="never-runs"),
    ],
)
def test_a_custom_schedule_refuses_a_malformed_or_empty_grid(
    connector: MakeConnector, prefix: str, grid: str
) -> None:
    instance = connector(
        **{
            f"{prefix}schedule_mode": "custom",
            f"{prefix}schedule_grid": grid,
            "oversize_schedule_enabled": True,
        }
    )
    assert f"{prefix}schedule_grid" in errors_of(instance)


def test_a_grid_counts_only_when_the_schedule_is_custom(connector: MakeConnector) -> None:
    connector(schedule_mode="always", schedule_grid="").full_clean()


@pytest.mark.parametrize(("threshold", "valid"), [(0, False), (1, True), (2000, True)])
def test_the_oversize_threshold_is_positive(
    connector: MakeConnector, threshold: int, valid: bool
) -> None:
    instance = connector(oversize_schedule_enabled=True, oversize_threshold_kb=threshold)
    if valid:
        instance.full_clean()
    else:
        assert "oversize_threshold_kb" in errors_of(instance)


# --- Content Restrictions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "normal", "low"),
    [(True, False, False), (False, True, False), (False, False, True), (True, True, True)],
)
def test_any_allowed_priority_is_enough(
    connector: MakeConnector, high: bool, normal: bool, low: bool
) -> None:
    connector(
        allow_priority_high=high, allow_priority_normal=normal, allow_priority_low=low
    ).full_clean()


def test_it_refuses_a_connector_that_allows_no_priority(connector: MakeConnector) -> None:
    instance = connector(
        allow_priority_high=False, allow_priority_normal=False, allow_priority_low=False
    )
    assert "allow_priority_normal" in errors_of(instance)


@pytest.mark.parametrize(("system", "non_system"), [(True, False), (False, True), (True, True)])
def test_any_allowed_message_type_is_enough(
    connector: MakeConnector, system: bool, non_system: bool
) -> None:
    connector(allow_system_messages=system, allow_non_system_messages=non_system).full_clean()


def test_it_refuses_a_connector_that_allows_no_message_type(connector: MakeConnector) -> None:
    instance = connector(allow_system_messages=False, allow_non_system_messages=False)
    assert "allow_non_system_messages" in errors_of(instance)


@pytest.mark.parametrize(("size", "valid"), [(None, True), (1, True), (10240, True), (0, False)])
def test_the_size_restriction_is_blank_or_positive(
    connector: MakeConnector, size: int | None, valid: bool
) -> None:
    instance = connector(max_message_size_kb=size)
    if valid:
        instance.full_clean()
    else:
        assert "max_message_size_kb" in errors_of(instance)


# --- Delivery Restrictions and Advanced -------------------------------------------------------


def test_sender_exceptions_are_normalised_without_duplicates(connector: MakeConnector) -> None:
    instance = connector(
        restrictions_enforced=True,
        sender_exceptions=[
            "Boss@Example.COM",
            "@Partner.example",
            "*@partner.example",
            "boss@example.com",
            "*@Bücher.de",
        ],
    )
    instance.full_clean()
    assert instance.sender_exceptions == [
        "boss@example.com",
        "*@partner.example",
        "*@xn--bcher-kva.de",
    ]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["not an address"], id="not-an-address"),
        pytest.param(["*@*.example.com"], id="wildcard-domain"),
        pytest.param(["*"], id="star"),
        pytest.param("boss@example.com", id="not-a-list"),
    ],
)
def test_it_refuses_malformed_sender_exceptions(connector: MakeConnector, value: object) -> None:
    assert "sender_exceptions" in errors_of(connector(sender_exceptions=value))


def test_etrn_domains_are_normalised(connector: MakeConnector) -> None:
    instance = connector(etrn_request="on_send", etrn_domains=["Example.COM.", "example.com"])
    instance.full_clean()
    assert instance.etrn_domains == ["example.com"]


@pytest.mark.parametrize("value", [["*.example.com"], ["192.0.2.1"], "example.com"])
def test_it_refuses_malformed_etrn_domains(connector: MakeConnector, value: object) -> None:
    assert "etrn_domains" in errors_of(connector(etrn_domains=value))


def test_basic_outbound_authentication_needs_a_user_name(connector: MakeConnector) -> None:
    assert "outbound_username" in errors_of(connector(outbound_auth="basic"))
    connector(outbound_auth="basic", outbound_username="relay", outbound_password="x").full_clean()
    connector(outbound_auth="anonymous", outbound_username="").full_clean()


@pytest.mark.parametrize("mode", ["none", "opportunistic", "required"])
def test_every_tls_mode_is_valid(connector: MakeConnector, mode: str) -> None:
    connector(tls_mode=mode).full_clean()


def test_it_refuses_an_unknown_tls_mode(connector: MakeConnector) -> None:
    assert "tls_mode" in errors_of(connector(tls_mode="starttls"))


# --- address spaces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("*", "*", id="everything"),
        pytest.param("*.NET", "*.net", id="top-level-wildcard"),
        pytest.param("*.Example.com.", "*.example.com", id="wildcard"),
        pytest.param("Example.COM.", "example.com", id="domain"),
        pytest.param("Bücher.de", "xn--bcher-kva.de", id="idna-domain"),
        pytest.param("*.bücher.de", "*.xn--bcher-kva.de", id="idna-wildcard"),
    ],
)
def test_an_address_space_pattern_is_stored_in_a_normal_form(
    saved: Connector, typed: str, stored: str
) -> None:
    space = AddressSpace(connector=saved, domain=typed)
    space.full_clean()
    assert space.domain == stored
    assert (space.type, space.cost) == ("SMTP", 1)


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("*example.com", id="star-without-dot"),
        pytest.param("mail.*.com", id="star-in-the-middle"),
        pytest.param("ex ample.com", id="space"),
        pytest.param("192.0.2.1", id="ip"),
        pytest.param("user@example.com", id="address"),
    ],
)
def test_it_refuses_a_malformed_address_space(saved: Connector, typed: str) -> None:
    assert "domain" in errors_of(AddressSpace(connector=saved, domain=typed))


@pytest.mark.parametrize("cost", [1, 50, 100])
def test_it_accepts_a_cost_from_1_to_100(saved: Connector, cost: int) -> None:
    AddressSpace(connector=saved, domain="*", cost=cost).full_clean()


@pytest.mark.parametrize("cost", [0, 101])
def test_it_refuses_a_cost_outside_1_to_100(saved: Connector, cost: int) -> None:
    assert "cost" in errors_of(AddressSpace(connector=saved, domain="*", cost=cost))


@pytest.mark.parametrize("cost", [0, 101])
def test_the_database_refuses_a_cost_outside_1_to_100(saved: Connector, cost: int) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        AddressSpace.objects.create(connector=saved, domain="*", cost=cost)
    space = AddressSpace.objects.create(connector=saved, domain="*", cost=100)
    with pytest.raises(IntegrityError), transaction.atomic():
        AddressSpace.objects.filter(pk=space.pk).update(cost=cost)


def test_a_pattern_appears_once_per_connector(saved: Connector) -> None:
    AddressSpace.objects.create(connector=saved, domain="example.com")
    errors = errors_of(AddressSpace(connector=saved, domain="EXAMPLE.com.", cost=5))
    assert "already exists" in errors["__all__"][0]
    AddressSpace(connector=saved, domain="*.example.com").full_clean()


def test_the_same_pattern_may_appear_on_another_connector(saved: Connector) -> None:
    AddressSpace.objects.create(connector=saved, domain="example.com")
    backup = Connector.objects.create(name="Backup", routing_group=RoutingGroup.first())
    AddressSpace(connector=backup, domain="example.com", cost=10).full_clean()


def test_the_database_refuses_a_pattern_twice_on_a_connector(saved: Connector) -> None:
    AddressSpace.objects.create(connector=saved, domain="example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        AddressSpace.objects.create(connector=saved, domain="example.com", cost=5)
