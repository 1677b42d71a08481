"""The setup commands `make run` calls on every start: createadmin and seedorg."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

from connectors.models import AddressSpace, Connector
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry, Organization
from smtpadmin.roles import Role, role_of

pytestmark = pytest.mark.django_db

STRONG = "orange-tractor-bicycle-42"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture(autouse=True)
def no_admin_password_in_environment(settings: Any) -> None:
    settings.SMTPADMIN_ADMIN_PASSWORD = ""


# --- createadmin -------------------------------------------------------------------------


def test_it_creates_the_full_administrator_with_the_given_password() -> None:
    output = run("createadmin", "--password", STRONG)

    admin = User.objects.get(username="admin")
    assert admin.check_password(STRONG)
    assert role_of(admin) is Role.FULL
    assert "Created Full Administrator 'admin'" in output
    assert STRONG not in output


def test_it_takes_the_password_from_the_environment_setting(settings: Any) -> None:
    settings.SMTPADMIN_ADMIN_PASSWORD = STRONG

    output = run("createadmin")

    assert User.objects.get(username="admin").check_password(STRONG)
    assert "SMTPADMIN_ADMIN_PASSWORD" in output


def test_it_generates_a_password_and_prints_it_once_when_none_is_given() -> None:
    output = run("createadmin")

    match = re.search(r"Password for 'admin': (\S+)", output)
    assert match, output
    assert User.objects.get(username="admin").check_password(match.group(1))
    assert len(match.group(1)) >= 12


def test_an_existing_admin_keeps_its_password_and_regains_the_role(settings: Any) -> None:
    run("createadmin", "--password", STRONG)
    admin = User.objects.get(username="admin")
    admin.groups.clear()
    settings.SMTPADMIN_ADMIN_PASSWORD = "a-different-password-77"

    output = run("createadmin")

    admin = User.objects.get(username="admin")
    assert admin.check_password(STRONG)
    assert role_of(admin) is Role.FULL
    assert "already exists" in output
    assert "password was kept" in output


def test_an_explicit_password_replaces_an_existing_one() -> None:
    run("createadmin", "--password", STRONG)

    run("createadmin", "--password", "another-strong-passphrase-9")

    assert User.objects.get(username="admin").check_password("another-strong-passphrase-9")


def test_reset_password_generates_a_new_one_for_an_existing_user() -> None:
    run("createadmin", "--password", STRONG)

    output = run("createadmin", "--reset-password")

    match = re.search(r"Password for 'admin': (\S+)", output)
    assert match, output
    assert User.objects.get(username="admin").check_password(match.group(1))


def test_it_creates_other_users_in_the_role_asked_for() -> None:
    run("createadmin", "--username", "vera", "--role", "view_only", "--password", STRONG)
    run("createadmin", "--username", "adam", "--role", "administrator", "--password", STRONG)

    assert role_of(User.objects.get(username="vera")) is Role.VIEW_ONLY
    assert role_of(User.objects.get(username="adam")) is Role.ADMINISTRATOR


def test_other_users_never_get_the_administrators_password_from_the_environment(
    settings: Any,
) -> None:
    settings.SMTPADMIN_ADMIN_PASSWORD = STRONG
    run("createadmin")

    output = run("createadmin", "--username", "vera", "--role", "view_only")

    vera = User.objects.get(username="vera")
    assert not vera.check_password(STRONG)
    match = re.search(r"Password for 'vera': (\S+)", output)
    assert match, output
    assert vera.check_password(match.group(1))
    assert "SMTPADMIN_ADMIN_PASSWORD" not in output.split("Password for")[0]


def test_reset_password_of_another_user_generates_one_despite_the_environment(
    settings: Any,
) -> None:
    run("createadmin", "--username", "adam", "--role", "administrator", "--password", STRONG)
    settings.SMTPADMIN_ADMIN_PASSWORD = "the-admins-own-passphrase-1"

    output = run("createadmin", "--username", "adam", "--reset-password")

    adam = User.objects.get(username="adam")
    assert not adam.check_password("the-admins-own-passphrase-1")
    match = re.search(r"Password for 'adam': (\S+)", output)
    assert match, output
    assert adam.check_password(match.group(1))


def test_it_prints_the_api_token_when_asked() -> None:
    output = run("createadmin", "--password", STRONG, "--print-token")

    token = Token.objects.get(user__username="admin")
    assert f"API token for 'admin': {token.key}" in output


def test_a_weak_password_is_refused_with_a_message() -> None:
    with pytest.raises(CommandError, match="not accepted"):
        run("createadmin", "--password", "admin")
    assert not User.objects.filter(username="admin").exists()


def test_an_unknown_role_is_refused_with_a_message() -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        run("createadmin", "--role", "owner")


# --- seedorg -----------------------------------------------------------------------------


def test_seedorg_creates_the_documented_organization(settings: Any) -> None:
    settings.SMTPADMIN_SERVER_NAME = "mail1"

    output = run("seedorg")

    assert "Seeded the organization" in output
    assert Organization.objects.count() == 1
    server = Server.objects.get()
    assert server.name == "mail1"
    assert server.routing_group == RoutingGroup.first()
    assert server.fqdn
    vs = VirtualServer.objects.get()
    assert (vs.name, vs.server, vs.ip_address, vs.port) == (
        "Default SMTP Virtual Server",
        server,
        "127.0.0.1",
        2525,
    )
    assert (vs.message_size_limit_kb, vs.recipients_per_message) == (4096, 64000)
    domain = AcceptedDomain.objects.get()
    assert (domain.domain, domain.type, domain.is_default) == (
        "smtpadmin.test",
        AcceptedDomain.Type.AUTHORITATIVE,
        True,
    )
    assert list(Mailbox.objects.values_list("address", flat=True)) == ["postmaster@smtpadmin.test"]
    internet = Connector.objects.get()
    assert internet.name == "Internet"
    assert internet.use_dns
    assert list(internet.bridgeheads.all()) == [vs]
    assert [(a.domain, a.cost) for a in AddressSpace.objects.all()] == [("*", 1)]
    assert AuditEntry.objects.filter(username="system", object_repr="Internet").exists()


def test_seedorg_seeds_only_once() -> None:
    run("seedorg")

    output = run("seedorg", "--domain", "other.example")

    assert "already set up" in output
    assert VirtualServer.objects.count() == 1
    assert Connector.objects.count() == 1
    assert list(AcceptedDomain.objects.values_list("domain", flat=True)) == ["smtpadmin.test"]


def test_seedorg_takes_the_domain_and_listener_from_its_options() -> None:
    run("seedorg", "--domain", "Relay.Example.ORG", "--ip", "all", "--port", "2526")

    assert AcceptedDomain.objects.get().domain == "relay.example.org"
    vs = VirtualServer.objects.get()
    assert (vs.ip_address, vs.port) == (None, 2526)


def test_seedorg_reuses_a_server_the_relay_worker_registered(settings: Any) -> None:
    settings.SMTPADMIN_SERVER_NAME = "mail1"
    registered = Server.objects.create(name="mail1", routing_group=RoutingGroup.first())

    run("seedorg")

    assert Server.objects.get() == registered
    assert VirtualServer.objects.get().server == registered


def test_seedorg_explains_a_bad_option_and_leaves_nothing_behind() -> None:
    with pytest.raises(CommandError, match="domain"):
        run("seedorg", "--domain", "not a domain")

    assert not Organization.objects.exists()
    assert not Server.objects.exists()
