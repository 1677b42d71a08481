"""The rules of an SMTP virtual server, through ``full_clean()`` (what forms and the API use) and
through the database constraints that hold even when ``clean()`` is bypassed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from servers.models import Certificate, RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry

pytestmark = pytest.mark.django_db

MakeVirtualServer = Callable[..., VirtualServer]


@pytest.fixture
def server(db: Any) -> Server:
    return Server.objects.create(name="mail1", routing_group=RoutingGroup.first())


@pytest.fixture
def other_server(db: Any) -> Server:
    return Server.objects.create(name="mail2", routing_group=RoutingGroup.first())


@pytest.fixture
def virtual_server(server: Server) -> MakeVirtualServer:
    """``virtual_server(**fields)``: an unsaved virtual server of ``server``."""

    def make(**fields: Any) -> VirtualServer:
        return VirtualServer(**{"server": server, "name": "Inbound", **fields})

    return make


@pytest.fixture
def certificate(db: Any) -> Certificate:
    certificate = Certificate.generate_self_signed("mail", "mail.example.com")
    certificate.save()
    return certificate


def errors_of(instance: Any) -> dict[str, list[str]]:
    """The field errors ``full_clean()`` raises (failing the test when it raises none)."""
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


# --- the server ------------------------------------------------------------------------------


def test_a_server_fqdn_is_stored_in_a_normal_form(server: Server) -> None:
    server.fqdn = "Mail1.Bücher.DE."
    server.full_clean()
    assert server.fqdn == "mail1.xn--bcher-kva.de"


@pytest.mark.parametrize("typed", ["192.0.2.1", "mail 1.example.com", "*.example.com"])
def test_a_malformed_server_fqdn_is_refused(server: Server, typed: str) -> None:
    server.fqdn = typed
    assert "fqdn" in errors_of(server)


def test_a_server_name_is_unique(server: Server) -> None:
    assert "name" in errors_of(Server(name="mail1", routing_group=server.routing_group))


# --- defaults ---------------------------------------------------------------------------------


def test_a_virtual_server_with_the_defaults_is_valid(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server()
    instance.full_clean()
    assert instance.port == 25
    assert instance.ip_address is None


def test_a_new_virtual_server_is_never_an_open_relay(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server()
    assert instance.relay_mode == "only_listed"
    assert instance.relay_list == []
    assert instance.connection_mode == "all_except_listed"
    assert instance.connection_list == []


# --- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [1, 25, 2525, 65535])
@pytest.mark.parametrize("field", ["port", "remote_port"])
def test_it_accepts_a_port_from_1_to_65535(
    virtual_server: MakeVirtualServer, field: str, port: int
) -> None:
    virtual_server(**{field: port}).full_clean()


@pytest.mark.parametrize("port", [0, 65536, 100000])
@pytest.mark.parametrize("field", ["port", "remote_port"])
def test_it_refuses_a_port_outside_1_to_65535(
    virtual_server: MakeVirtualServer, field: str, port: int
) -> None:
    assert field in errors_of(virtual_server(**{field: port}))


# --- bindings ---------------------------------------------------------------------------------


def test_it_refuses_a_second_listener_on_the_same_address_and_port(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    assert "ip_address" in errors_of(virtual_server(name="Copy", ip_address="192.0.2.10", port=25))


@pytest.mark.parametrize(
    ("ip_address", "port"),
    [
        pytest.param("192.0.2.10", 587, id="same-address-other-port"),
        pytest.param("192.0.2.11", 25, id="other-address-same-port"),
        pytest.param("2001:db8::10", 25, id="ipv6-address-same-port"),
    ],
)
def test_it_accepts_a_listener_on_another_address_or_port(
    virtual_server: MakeVirtualServer, ip_address: str, port: int
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    virtual_server(name="Other", ip_address=ip_address, port=port).full_clean()


def test_it_accepts_the_same_binding_on_another_server(
    virtual_server: MakeVirtualServer, other_server: Server
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    VirtualServer(
        server=other_server, name="Inbound", ip_address="192.0.2.10", port=25
    ).full_clean()
    VirtualServer(server=other_server, name="All", port=25).save()
    virtual_server(name="All", port=26).full_clean()


def test_a_saved_virtual_server_does_not_clash_with_itself(
    virtual_server: MakeVirtualServer,
) -> None:
    for fields in ({"ip_address": "192.0.2.10"}, {"ip_address": None, "port": 26}):
        instance = virtual_server(**fields)
        instance.save()
        instance.full_clean()


def test_it_refuses_an_address_on_a_port_where_all_unassigned_listens(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(name="All", ip_address=None, port=25).save()
    assert "ip_address" in errors_of(virtual_server(ip_address="192.0.2.10", port=25))


def test_it_refuses_all_unassigned_on_a_port_where_an_address_listens(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    assert "port" in errors_of(virtual_server(name="All", ip_address=None, port=25))


def test_it_refuses_a_second_all_unassigned_on_the_same_port(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(name="All", ip_address=None, port=25).save()
    assert "port" in errors_of(virtual_server(name="All again", ip_address=None, port=25))


def test_it_accepts_all_unassigned_on_another_port(virtual_server: MakeVirtualServer) -> None:
    virtual_server(name="All", ip_address=None, port=25).save()
    virtual_server(name="Submission", ip_address=None, port=587).full_clean()
    virtual_server(name="Submission on one address", ip_address="192.0.2.10", port=587).full_clean()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("2001:DB8:0:0::10", "2001:db8::10", id="ipv6-compressed"),
        pytest.param("::ffff:192.0.2.10", "192.0.2.10", id="ipv4-mapped-becomes-ipv4"),
        pytest.param("192.0.2.10", "192.0.2.10", id="ipv4"),
    ],
)
def test_it_stores_the_address_in_a_normal_form(
    virtual_server: MakeVirtualServer, typed: str, stored: str
) -> None:
    instance = virtual_server(ip_address=typed)
    instance.full_clean()
    assert instance.ip_address == stored


def test_a_blank_address_means_all_unassigned(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server(ip_address="")
    instance.full_clean()
    assert instance.ip_address is None


def test_a_blank_address_clashes_with_an_address_on_the_same_port(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    assert "port" in errors_of(virtual_server(name="All", ip_address="", port=25))


def test_an_ipv4_mapped_address_clashes_with_its_ipv4_twin(
    virtual_server: MakeVirtualServer,
) -> None:
    virtual_server(ip_address="192.0.2.10", port=25).save()
    assert "ip_address" in errors_of(virtual_server(name="Twin", ip_address="::ffff:192.0.2.10"))


@pytest.mark.parametrize("typed", ["192.0.2.300", "not-an-address", "192.0.2.10/24"])
def test_it_reports_a_malformed_address_as_a_field_error(
    virtual_server: MakeVirtualServer, typed: str
) -> None:
    virtual_server(ip_address=None, port=25).save()
    assert "ip_address" in errors_of(virtual_server(name="Bad", ip_address=typed))


@pytest.mark.parametrize(
    "field",
    [
        "port",
        "message_size_limit_kb",
        "session_size_limit_kb",
        "outbound_per_domain_limit",
        "outbound_connection_limit",
    ],
)
def test_it_reports_a_malformed_number_as_a_field_error(
    virtual_server: MakeVirtualServer, field: str
) -> None:
    fields = {"session_size_limit_kb": 10240, "outbound_per_domain_limit": 100, field: "many"}
    assert field in errors_of(virtual_server(**fields))


# --- message and session size -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_kb", "session_kb"),
    [
        pytest.param(4096, None, id="no-session-limit"),
        pytest.param(None, None, id="no-limits"),
        pytest.param(4096, 4096, id="equal"),
        pytest.param(4096, 10240, id="session-larger"),
    ],
)
def test_it_accepts_a_session_limit_that_covers_the_message_limit(
    virtual_server: MakeVirtualServer, message_kb: int | None, session_kb: int | None
) -> None:
    virtual_server(message_size_limit_kb=message_kb, session_size_limit_kb=session_kb).full_clean()


def test_it_refuses_a_session_limit_below_the_message_limit(
    virtual_server: MakeVirtualServer,
) -> None:
    instance = virtual_server(message_size_limit_kb=4096, session_size_limit_kb=4095)
    assert "session_size_limit_kb" in errors_of(instance)


def test_it_refuses_a_session_limit_without_a_message_limit(
    virtual_server: MakeVirtualServer,
) -> None:
    instance = virtual_server(message_size_limit_kb=None, session_size_limit_kb=10240)
    assert "message_size_limit_kb" in errors_of(instance)


@pytest.mark.parametrize(
    "field",
    [
        "message_size_limit_kb",
        "session_size_limit_kb",
        "messages_per_connection",
        "recipients_per_message",
        "connection_limit",
        "outbound_connection_limit",
        "outbound_per_domain_limit",
    ],
)
def test_it_refuses_a_limit_of_zero(virtual_server: MakeVirtualServer, field: str) -> None:
    assert field in errors_of(virtual_server(**{field: 0}))


@pytest.mark.parametrize(
    "field", ["connection_timeout_minutes", "retry_first_minutes", "outbound_expiration_minutes"]
)
def test_it_refuses_zero_minutes(virtual_server: MakeVirtualServer, field: str) -> None:
    assert field in errors_of(virtual_server(**{field: 0}))


@pytest.mark.parametrize(
    ("hops", "valid"), [(0, False), (1, True), (15, True), (256, True), (257, False)]
)
def test_the_hop_count_is_from_1_to_256(
    virtual_server: MakeVirtualServer, hops: int, valid: bool
) -> None:
    instance = virtual_server(max_hop_count=hops)
    if valid:
        instance.full_clean()
    else:
        assert "max_hop_count" in errors_of(instance)


# --- outbound connections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_domain", "total"),
    [
        pytest.param(100, 1000, id="below"),
        pytest.param(1000, 1000, id="equal"),
        pytest.param(None, 1000, id="per-domain-unlimited"),
        pytest.param(5000, None, id="total-unlimited"),
        pytest.param(None, None, id="both-unlimited"),
    ],
)
def test_it_accepts_a_per_domain_limit_within_the_total(
    virtual_server: MakeVirtualServer, per_domain: int | None, total: int | None
) -> None:
    virtual_server(
        outbound_per_domain_limit=per_domain, outbound_connection_limit=total
    ).full_clean()


def test_it_refuses_more_connections_per_domain_than_in_total(
    virtual_server: MakeVirtualServer,
) -> None:
    instance = virtual_server(outbound_per_domain_limit=1001, outbound_connection_limit=1000)
    assert "outbound_per_domain_limit" in errors_of(instance)


def test_basic_outbound_authentication_needs_a_user_name(
    virtual_server: MakeVirtualServer,
) -> None:
    assert "outbound_username" in errors_of(virtual_server(outbound_auth="basic"))
    virtual_server(outbound_auth="basic", outbound_username="relay").full_clean()


# --- access -----------------------------------------------------------------------------------


def test_it_normalises_the_connection_and_relay_lists(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server(
        connection_list=["192.0.2.7/24", "Client.Example.com", "192.0.2.1/32"],
        relay_list=["2001:DB8::/32", "198.51.100.7", "198.51.100.7"],
    )
    instance.full_clean()
    assert instance.connection_list == ["192.0.2.0/24", "client.example.com", "192.0.2.1"]
    assert instance.relay_list == ["2001:db8::/32", "198.51.100.7"]


@pytest.mark.parametrize("field", ["connection_list", "relay_list"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["192.0.2.0/33"], id="bad-prefix"),
        pytest.param(["999.0.2.1"], id="bad-address"),
        pytest.param(["not a host"], id="garbage"),
        pytest.param(["*"], id="every-client"),
        pytest.param("192.0.2.1", id="not-a-list"),
    ],
)
def test_it_refuses_a_malformed_connection_or_relay_list(
    virtual_server: MakeVirtualServer, field: str, value: object
) -> None:
    assert field in errors_of(virtual_server(**{field: value}))


def test_tls_can_only_be_required_with_a_certificate(
    virtual_server: MakeVirtualServer, certificate: Certificate
) -> None:
    assert "require_tls" in errors_of(virtual_server(require_tls=True))
    virtual_server(require_tls=True, certificate=certificate).full_clean()


def test_basic_authentication_can_only_require_tls_with_a_certificate(
    virtual_server: MakeVirtualServer, certificate: Certificate
) -> None:
    assert "auth_basic_requires_tls" in errors_of(virtual_server(auth_basic_requires_tls=True))
    virtual_server(auth_basic_requires_tls=True, certificate=certificate).full_clean()


@pytest.mark.parametrize(
    ("anonymous", "basic", "valid"),
    [(True, True, True), (True, False, True), (False, True, True), (False, False, False)],
)
def test_at_least_one_authentication_method_is_allowed(
    virtual_server: MakeVirtualServer, anonymous: bool, basic: bool, valid: bool
) -> None:
    instance = virtual_server(auth_anonymous=anonymous, auth_basic=basic)
    if valid:
        instance.full_clean()
    else:
        assert "auth_anonymous" in errors_of(instance)


# --- delivery: names, smart hosts, DNS servers ------------------------------------------------


def test_it_normalises_the_smart_hosts(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server(smart_hosts="Relay.Example.com:587, [IPv6:2001:DB8::1]")
    instance.full_clean()
    assert instance.smart_hosts == "relay.example.com:587;[IPv6:2001:db8::1]"


@pytest.mark.parametrize("typed", ["192.0.2.1", "[192.0.2.1", "relay:0", "relay:65536", "*"])
def test_it_refuses_a_malformed_smart_host(virtual_server: MakeVirtualServer, typed: str) -> None:
    assert "smart_hosts" in errors_of(virtual_server(smart_hosts=typed))


def test_it_normalises_the_unresolved_recipients_host(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server(unresolved_forward_host="Internal.Example.com:25")
    instance.full_clean()
    assert instance.unresolved_forward_host == "internal.example.com:25"
    bad = virtual_server(unresolved_forward_host="192.0.2.1")
    assert "unresolved_forward_host" in errors_of(bad)


@pytest.mark.parametrize("field", ["fqdn", "masquerade_domain"])
def test_it_normalises_the_fqdn_and_masquerade_domain(
    virtual_server: MakeVirtualServer, field: str
) -> None:
    instance = virtual_server(**{field: "Mail.Bücher.DE."})
    instance.full_clean()
    assert getattr(instance, field) == "mail.xn--bcher-kva.de"


@pytest.mark.parametrize("field", ["fqdn", "masquerade_domain"])
@pytest.mark.parametrize("typed", ["192.0.2.1", "*.example.com", "mail example.com"])
def test_it_refuses_a_malformed_fqdn_or_masquerade_domain(
    virtual_server: MakeVirtualServer, field: str, typed: str
) -> None:
    assert field in errors_of(virtual_server(**{field: typed}))


def test_it_normalises_the_external_dns_servers(virtual_server: MakeVirtualServer) -> None:
    instance = virtual_server(external_dns_servers=["192.0.2.53", "2001:DB8::53"])
    instance.full_clean()
    assert instance.external_dns_servers == ["192.0.2.53", "2001:db8::53"]


@pytest.mark.parametrize("value", [["dns.example.com"], ["192.0.2.0/24"], "192.0.2.53"])
def test_it_refuses_external_dns_servers_that_are_not_addresses(
    virtual_server: MakeVirtualServer, value: object
) -> None:
    assert "external_dns_servers" in errors_of(virtual_server(external_dns_servers=value))


def test_it_refuses_a_malformed_ndr_copy_address(virtual_server: MakeVirtualServer) -> None:
    assert "ndr_copy_to" in errors_of(virtual_server(ndr_copy_to="postmaster"))
    virtual_server(ndr_copy_to="postmaster@example.com").full_clean()


# --- database constraints (clean() bypassed) --------------------------------------------------


def test_the_database_accepts_a_valid_row(server: Server) -> None:
    VirtualServer.objects.create(server=server, name="A", ip_address="192.0.2.10", port=25)
    VirtualServer.objects.create(server=server, name="B", ip_address=None, port=26)
    assert VirtualServer.objects.count() == 2


@pytest.mark.parametrize("ip_address", ["192.0.2.10", None], ids=["address", "all-unassigned"])
def test_the_database_refuses_a_duplicate_binding(server: Server, ip_address: str | None) -> None:
    VirtualServer.objects.create(server=server, name="A", ip_address=ip_address, port=25)
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.create(server=server, name="B", ip_address=ip_address, port=25)


@pytest.mark.parametrize("field", ["port", "remote_port"])
@pytest.mark.parametrize("port", [0, 65536])
def test_the_database_refuses_a_port_out_of_range(server: Server, field: str, port: int) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.create(server=server, name="A", **{field: port})


def test_the_database_refuses_an_update_to_a_port_out_of_range(server: Server) -> None:
    instance = VirtualServer.objects.create(server=server, name="A", port=25)
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.filter(pk=instance.pk).update(port=70000)


@pytest.mark.parametrize(
    ("message_kb", "session_kb"),
    [
        pytest.param(4096, 4095, id="session-below-message"),
        pytest.param(None, 10240, id="no-message"),
    ],
)
def test_the_database_refuses_a_session_limit_below_the_message_limit(
    server: Server, message_kb: int | None, session_kb: int
) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.create(
            server=server,
            name="A",
            message_size_limit_kb=message_kb,
            session_size_limit_kb=session_kb,
        )


def test_the_database_refuses_an_update_to_a_session_limit_below_the_message_limit(
    server: Server,
) -> None:
    instance = VirtualServer.objects.create(
        server=server, name="A", message_size_limit_kb=4096, session_size_limit_kb=10240
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.filter(pk=instance.pk).update(session_size_limit_kb=1)


def test_the_database_refuses_more_connections_per_domain_than_in_total(server: Server) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.create(
            server=server, name="A", outbound_per_domain_limit=11, outbound_connection_limit=10
        )
    instance = VirtualServer.objects.create(
        server=server, name="B", outbound_per_domain_limit=None, outbound_connection_limit=10
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualServer.objects.filter(pk=instance.pk).update(outbound_per_domain_limit=11)


# --- default profiles -------------------------------------------------------------------------

EXCHANGE_2003 = {
    "message_size_limit_kb": 4096,
    "session_size_limit_kb": None,
    "recipients_per_message": 64000,
    "messages_per_connection": 20,
    "retry_first_minutes": 10,
    "retry_second_minutes": 10,
    "retry_third_minutes": 10,
    "retry_subsequent_minutes": 15,
    "auth_anonymous": True,
    "auth_basic": True,
    "auth_basic_requires_tls": False,
    "require_tls": False,
    "connection_timeout_minutes": 10,
    "logging_enabled": False,
    "outbound_delay_notification_minutes": 12 * 60,
    "outbound_expiration_minutes": 2 * 24 * 60,
    "local_delay_notification_minutes": 12 * 60,
    "local_expiration_minutes": 2 * 24 * 60,
    "outbound_connection_limit": 1000,
    "outbound_timeout_minutes": 10,
    "outbound_per_domain_limit": 100,
    "remote_port": 25,
    "max_hop_count": 15,
    "relay_allow_authenticated": True,
}

IIS_6 = {
    "message_size_limit_kb": 2048,
    "session_size_limit_kb": 10240,
    "recipients_per_message": 100,
    "retry_first_minutes": 15,
    "retry_second_minutes": 30,
    "retry_third_minutes": 60,
    "retry_subsequent_minutes": 240,
    "auth_anonymous": True,
    "auth_basic": False,
}


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        pytest.param("exchange2003", EXCHANGE_2003, id="exchange-2003"),
        pytest.param("iis6", IIS_6, id="iis-6"),
    ],
)
def test_a_profile_gives_the_values_of_the_spec(
    server: Server, profile: str, expected: dict[str, Any]
) -> None:
    instance = VirtualServer.with_profile(profile, server=server, name="Default", port=2525)
    instance.full_clean()
    instance.save()
    instance.refresh_from_db()
    assert {field: getattr(instance, field) for field in expected} == expected
    assert (instance.server, instance.name, instance.port) == (server, "Default", 2525)


def test_fields_given_with_a_profile_override_it(server: Server) -> None:
    instance = VirtualServer.with_profile("iis6", server=server, message_size_limit_kb=1024)
    assert instance.message_size_limit_kb == 1024
    assert instance.recipients_per_message == 100


def test_it_refuses_an_unknown_profile(server: Server) -> None:
    with pytest.raises(ValidationError) as caught:
        VirtualServer.with_profile("exchange2007", server=server)
    assert "profile" in caught.value.message_dict


# --- desired state: start / stop / pause ------------------------------------------------------


@pytest.fixture
def saved(server: Server) -> VirtualServer:
    return VirtualServer.objects.create(server=server, name="Inbound", desired_state="running")


@pytest.mark.parametrize(
    ("action", "initial", "wanted"),
    [
        pytest.param("stop", "running", "stopped", id="stop"),
        pytest.param("pause", "running", "paused", id="pause"),
        pytest.param("start", "stopped", "running", id="start"),
        pytest.param("start", "paused", "running", id="resume"),
    ],
)
def test_a_state_change_is_recorded_and_audited(
    saved: VirtualServer, administrator: User, action: str, initial: str, wanted: str
) -> None:
    VirtualServer.objects.filter(pk=saved.pk).update(desired_state=initial)
    saved.refresh_from_db()

    assert getattr(saved, action)(by=administrator) is True

    assert saved.desired_state == wanted
    saved.refresh_from_db()
    assert saved.desired_state == wanted
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.field, entry.old_value, entry.new_value) == (
        "action",
        "desired_state",
        initial,
        wanted,
    )
    assert (entry.user, entry.username, entry.object_id) == (
        administrator,
        administrator.username,
        str(saved.pk),
    )


def test_a_state_change_without_a_user_is_audited_as_the_system(saved: VirtualServer) -> None:
    saved.stop()
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.username) == (None, "system")


def test_asking_for_the_current_state_changes_nothing(
    saved: VirtualServer, administrator: User
) -> None:
    assert saved.start(by=administrator) is False
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("state", ["disabled", "unknown", "RUNNING", ""])
def test_it_refuses_an_unknown_desired_state(saved: VirtualServer, state: str) -> None:
    with pytest.raises(ValidationError) as caught:
        saved.set_desired_state(state)
    assert "desired_state" in caught.value.message_dict
    saved.refresh_from_db()
    assert saved.desired_state == "running"
    assert not AuditEntry.objects.exists()
