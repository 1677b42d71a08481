"""The Internet Mail Wizard: server and virtual server, send / receive / both, accepted domains,
an outbound connector, the relay check, the summary, and Finish making everything in one
transaction, audited; refusing, and saying why, when the virtual server is not suitable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError
from django.test import Client

from connectors.models import AddressSpace, Connector
from servers.models import AcceptedDomain, RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry
from tests.html_forms import form_data

pytestmark = pytest.mark.django_db

WIZARD = "/connectors/internet-mail-wizard/"
Response = Any  # the test client's response


@dataclass
class Org:
    server: Server
    virtual_server: VirtualServer
    other_server: Server
    other_virtual_server: VirtualServer


@pytest.fixture
def org(db: Any) -> Org:
    group = RoutingGroup.first()
    server = Server.objects.create(name="ex1", fqdn="mail.example.com", routing_group=group)
    vs = VirtualServer.objects.create(server=server, name="Default SMTP Virtual Server", port=25)
    other = Server.objects.create(name="ex2", routing_group=group)
    other_vs = VirtualServer.objects.create(server=other, name="Internal Relay", port=25)
    return Org(server, vs, other, other_vs)


class Wizard:
    """Drives the wizard the way a browser does: read the page's form, change a few answers,
    press a button."""

    def __init__(self, user: User | None) -> None:
        self.client = Client()
        if user is not None:
            self.client.force_login(user)

    def page(self, query: str = "") -> str:
        response = self.client.get(WIZARD + query)
        assert response.status_code == 200
        return response.content.decode()

    def press(self, step: str, action: str = "next", **answers: Any) -> Response:
        data = form_data(self.page())
        assert data["step"] == step, f"the wizard shows {data['step']!r}, not {step!r}"
        data.update(answers, wizard_action=action)
        return self.client.post(WIZARD, data)

    def next(self, step: str, **answers: Any) -> None:
        response = self.press(step, **answers)
        assert response.status_code == 302, pane(response)

    def current_step(self) -> str:
        return str(form_data(self.page())["step"])


def pane(response: Response) -> str:
    html = response.content.decode()
    return html[html.index('<main class="pane"') :] if '<main class="pane"' in html else html


def field_errors(response: Response, name: str) -> str:
    """The HTML of one field's box on the page (its errors are inside)."""
    html = response.content.decode()
    start = html.index(f'<div id="field-{name}">')
    return html[start : html.index("</ul>", start)] if "errorlist" in html[start:] else ""


def up_to_summary(
    wizard: Wizard,
    org: Org,
    function: str = "both",
    domains: str = "example.com",
    connector: dict[str, Any] | None = None,
    **server_step: Any,
) -> None:
    wizard.next(
        "server",
        server=org.server.pk,
        virtual_server=org.virtual_server.pk,
        **server_step,
    )
    wizard.next("function", function=function)
    if function != "send":
        wizard.next("domains", domains=domains)
    if function != "receive":
        wizard.next("connector", **(connector or {}))
    wizard.next("relay")
    assert wizard.current_step() == "summary"


def finish(wizard: Wizard) -> Response:
    return wizard.press("summary", action="finish")


def entries_by(user: User) -> list[tuple[str, str, str, str]]:
    return list(
        AuditEntry.objects.filter(user=user)
        .order_by("pk")
        .values_list("action", "object_type", "object_repr", "field")
    )


# --- the happy paths ----------------------------------------------------------------------------


def test_it_sets_up_sending_and_receiving_in_one_go(administrator: User, org: Org) -> None:
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, domains="example.com\nExample.NET\n*.example.org\nexample.com")
    summary = wizard.page()
    assert "Internet Mail Connector" in summary and "SMTP:*;1" in summary
    assert AcceptedDomain.objects.count() == 0 and Connector.objects.count() == 0  # not yet

    response = finish(wizard)

    assert response.status_code == 302
    domains = {d.domain: d for d in AcceptedDomain.objects.all()}
    assert sorted(domains) == ["*.example.org", "example.com", "example.net"]
    assert all(d.type == AcceptedDomain.Type.AUTHORITATIVE for d in domains.values())
    assert [d for d in domains if domains[d].is_default] == ["example.com"]
    connector = Connector.objects.get()
    assert connector.name == "Internet Mail Connector" and connector.use_dns
    assert not connector.allow_relay
    assert connector.routing_group == org.server.routing_group
    assert list(connector.bridgeheads.all()) == [org.virtual_server]
    assert [(s.domain, s.cost) for s in connector.address_spaces.all()] == [("*", 1)]
    entries = entries_by(administrator)
    assert {(kind, name) for action, kind, name, field in entries if not field} == {
        ("Accepted Domain", "example.com"),
        ("Accepted Domain", "example.net"),
        ("Accepted Domain", "*.example.org"),
        ("Connector", "Internet Mail Connector"),
    }
    assert {action for action, *_ in entries} == {"create"}
    # The connector's entry is written once its bridgehead and address space exist.
    assert ("create", "Connector", "Internet Mail Connector", "address_spaces") in entries
    assert ("create", "Connector", "Internet Mail Connector", "bridgeheads") in entries
    done = wizard.page()
    assert "Internet mail is set up" in done
    assert f'href="/connectors/{connector.pk}/"' in done
    assert (
        "MX record for example.com, example.net, *.example.org pointing to mail.example.com" in done
    )
    assert wizard.current_step() == "server"  # the wizard starts afresh afterwards


def test_sending_only_creates_a_smart_host_connector_for_listed_domains(
    administrator: User, org: Org
) -> None:
    wizard = Wizard(administrator)
    connector = {
        "name": "Via provider",
        "route": "smart_host",
        "smart_hosts": "Relay.Example.net:587, [192.0.2.25]",
        "address_space": "listed",
        "domains": "example.org\n*.example.com",
        "cost": "5",
    }
    up_to_summary(wizard, org, function="send", connector=connector)
    assert "Accepted domains" not in wizard.page()  # not a step when only sending

    assert finish(wizard).status_code == 302

    assert not AcceptedDomain.objects.exists()
    created = Connector.objects.get()
    assert created.name == "Via provider" and not created.use_dns
    assert created.smart_hosts == "relay.example.net:587;[192.0.2.25]"
    spaces = [(s.domain, s.cost) for s in created.address_spaces.all()]
    assert spaces == [("*.example.com", 5), ("example.org", 5)]
    assert list(created.bridgeheads.all()) == [org.virtual_server]


def test_receiving_only_creates_the_domains_and_no_connector(administrator: User, org: Org) -> None:
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="receive")
    wizard.next("domains", domains="example.com\nbackup.example", type="external_relay")
    assert "Outbound connector" not in wizard.page()
    wizard.next("relay")

    assert finish(wizard).status_code == 302

    assert not Connector.objects.exists()
    assert set(AcceptedDomain.objects.values_list("domain", "type")) == {
        ("example.com", "external_relay"),
        ("backup.example", "external_relay"),
    }


def test_existing_domains_are_reused_not_duplicated(administrator: User, org: Org) -> None:
    existing = AcceptedDomain.objects.create(
        domain="example.com", type=AcceptedDomain.Type.INTERNAL_RELAY, is_default=True
    )
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="receive")
    page = wizard.page()
    assert 'name="default_domain"' not in page  # there is a default already
    wizard.next("domains", domains="EXAMPLE.com.\nexample.net")
    wizard.next("relay")
    summary = wizard.page()
    assert "accepted already; unchanged" in summary

    assert finish(wizard).status_code == 302

    assert AcceptedDomain.objects.count() == 2
    existing.refresh_from_db()
    assert existing.type == AcceptedDomain.Type.INTERNAL_RELAY and existing.is_default
    assert not AcceptedDomain.objects.get(domain="example.net").is_default
    assert not AuditEntry.objects.filter(object_repr="example.com").exists()


def test_the_default_domain_is_the_one_chosen_when_there_is_none(
    administrator: User, org: Org
) -> None:
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="receive")
    response = wizard.press("domains", domains="a.example\nb.example", default_domain="c.example")
    assert response.status_code == 400
    assert "Choose one of the domains listed above" in field_errors(response, "default_domain")
    wizard.next("domains", domains="a.example\nb.example", default_domain="B.example")
    wizard.next("relay")
    finish(wizard)
    assert AcceptedDomain.objects.get(is_default=True).domain == "b.example"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "relay_list", "reason"),
    [
        ("all_except_listed", [], "relay is allowed for all computers except none"),
        ("only_listed", ["192.0.2.1", "0.0.0.0/0"], "0.0.0.0/0, which is every IPv4 address"),
        ("only_listed", ["::/0"], "::/0, which is every IPv6 address"),
    ],
)
def test_an_open_relay_is_refused_and_the_page_says_why(
    administrator: User, org: Org, mode: str, relay_list: list[str], reason: str
) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(
        relay_mode=mode, relay_list=relay_list
    )
    wizard = Wizard(administrator)
    response = wizard.press("server", server=org.server.pk, virtual_server=org.virtual_server.pk)

    assert response.status_code == 400
    errors = field_errors(response, "virtual_server")
    assert "is an open relay" in errors and reason in errors
    assert 'name="close_relay"' in response.content.decode()  # the way forward is offered
    assert wizard.current_step() == "server"


def test_the_wizard_closes_an_open_relay_when_asked(administrator: User, org: Org) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(
        relay_list=["192.0.2.10", "0.0.0.0/0", "::/0"]
    )
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, close_relay="on")
    assert "192.0.2.10, 0.0.0.0/0, ::/0 → 192.0.2.10" in wizard.page()

    assert finish(wizard).status_code == 302

    vs = VirtualServer.objects.get(pk=org.virtual_server.pk)
    assert vs.relay_mode == "only_listed" and vs.relay_list == ["192.0.2.10"]
    assert vs.open_relay_reasons() == []
    change = AuditEntry.objects.get(user=administrator, field="relay_list")
    assert change.action == "update" and change.new_value == "192.0.2.10"
    assert "0.0.0.0/0" in change.old_value


def test_closing_all_except_the_list_keeps_none_of_the_refused_computers(
    administrator: User, org: Org
) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(
        relay_mode="all_except_listed", relay_list=["198.51.100.7"]
    )
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, close_relay="on")
    finish(wizard)
    vs = VirtualServer.objects.get(pk=org.virtual_server.pk)
    assert (vs.relay_mode, vs.relay_list) == ("only_listed", [])


def test_the_relay_check_will_not_leave_relay_open(administrator: User, org: Org) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(relay_list=["0.0.0.0/0"])
    wizard = Wizard(administrator)
    wizard.next(
        "server", server=org.server.pk, virtual_server=org.virtual_server.pk, close_relay="on"
    )
    wizard.next("function", function="send")
    wizard.next("connector")
    page = wizard.page()
    assert "Relay is open." in page and "0.0.0.0/0" in page

    data = form_data(page)
    data.pop("tighten")  # untick "Close relay"
    response = wizard.client.post(WIZARD, {**data, "wizard_action": "next"})

    assert response.status_code == 400
    assert "never leaves an open relay" in field_errors(response, "tighten")


def test_a_connector_relaying_to_every_domain_is_closed_too(administrator: User, org: Org) -> None:
    relaying = Connector.objects.create(
        name="Old", routing_group=org.server.routing_group, allow_relay=True
    )
    AddressSpace.objects.create(connector=relaying, domain="*")
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="receive")
    wizard.next("domains", domains="example.com")
    assert "Connector &#x27;Old&#x27; allows messages to be relayed to every domain" in (
        wizard.page()
    )
    wizard.next("relay")
    finish(wizard)
    relaying.refresh_from_db()
    assert not relaying.allow_relay
    assert AuditEntry.objects.filter(object_repr="Old", field="allow_relay").exists()


def test_a_closed_relay_is_left_as_it_is(administrator: User, org: Org) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(relay_list=["192.0.2.0/24"])
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="send")
    wizard.next("connector")
    page = wizard.page()
    assert "Relay stays closed:" in page
    assert "only computers that authenticate and the 1 computer listed may relay" in page
    assert 'name="tighten"' not in page
    wizard.next("relay")
    finish(wizard)
    assert not AuditEntry.objects.filter(object_type="Virtual Server").exists()


def test_receiving_needs_anonymous_access(administrator: User, org: Org) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(auth_anonymous=False)
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)

    response = wizard.press("function", function="both")

    assert response.status_code == 400
    errors = field_errors(response, "function")
    assert "does not allow anonymous access" in errors
    assert "never log in before they deliver" in errors
    wizard.next("function", function="send")  # sending needs no anonymous access
    assert wizard.current_step() == "connector"


def test_only_virtual_servers_of_the_chosen_server_are_accepted(
    administrator: User, org: Org
) -> None:
    wizard = Wizard(administrator)
    response = wizard.press(
        "server", server=org.server.pk, virtual_server=org.other_virtual_server.pk
    )
    assert response.status_code == 400
    assert "runs on server ex2, not on ex1" in field_errors(response, "virtual_server")


def test_choosing_a_server_lists_only_its_virtual_servers(administrator: User, org: Org) -> None:
    page = Wizard(administrator).page(f"?server={org.other_server.pk}")
    choices = page[page.index('<div id="field-virtual_server">') :]
    choices = choices[: choices.index("</select>")]
    assert "Internal Relay" in choices and "Default SMTP Virtual Server" not in choices
    assert "selected>Internal Relay" in choices  # the only one is chosen


def test_warnings_are_shown_but_do_not_stop_the_wizard(administrator: User, org: Org) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(
        port=2525, ip_address="127.0.0.1", desired_state="stopped"
    )
    wizard = Wizard(administrator)
    up_to_summary(wizard, org)
    summary = wizard.page()
    assert "listens on port 2525" in summary
    assert "listens on 127.0.0.1 (this computer only)" in summary
    assert "is stopped" in summary
    assert finish(wizard).status_code == 302


@pytest.mark.parametrize(
    ("domains", "error"),
    [
        ("example.com\nexa mple.com", "&#x27;exa mple.com&#x27; is not a valid domain name."),
        ("*", "would accept mail for every domain: an open relay"),
        ("", "Enter at least one domain to receive mail for."),
    ],
)
def test_a_bad_domain_is_shown_at_the_domains_field(
    administrator: User, org: Org, domains: str, error: str
) -> None:
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="receive")
    response = wizard.press("domains", domains=domains)
    assert response.status_code == 400
    assert error in field_errors(response, "domains")
    assert wizard.current_step() == "domains"


@pytest.mark.parametrize(
    ("answers", "field", "error"),
    [
        (
            {"route": "smart_host", "smart_hosts": "192.0.2.1"},
            "smart_hosts",
            "put IP addresses in brackets, like [192.0.2.1]",
        ),
        (
            {"route": "smart_host", "smart_hosts": ""},
            "smart_hosts",
            "Enter at least one smart host, or route by DNS.",
        ),
        (
            {"address_space": "listed", "domains": "example..com"},
            "domains",
            "is not a valid domain name",
        ),
        ({"address_space": "listed", "domains": ""}, "domains", "List at least one domain"),
        ({"cost": "101"}, "cost", "less than or equal to 100"),
    ],
)
def test_a_bad_connector_answer_is_shown_at_its_field(
    administrator: User, org: Org, answers: dict[str, str], field: str, error: str
) -> None:
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="send")
    response = wizard.press("connector", **answers)
    assert response.status_code == 400
    assert error in field_errors(response, field)


def test_a_connector_name_that_exists_is_refused(administrator: User, org: Org) -> None:
    Connector.objects.create(name="Internet Mail Connector", routing_group=org.server.routing_group)
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="send")
    response = wizard.press("connector", name="internet mail connector")
    assert response.status_code == 400
    assert "A connector named &#x27;Internet Mail Connector&#x27; exists already" in (
        field_errors(response, "name")
    )


# --- moving between steps ----------------------------------------------------------------------


def test_back_returns_to_the_previous_step_with_its_answers(administrator: User, org: Org) -> None:
    wizard = Wizard(administrator)
    wizard.next("server", server=org.server.pk, virtual_server=org.virtual_server.pk)
    wizard.next("function", function="send")
    assert wizard.press("connector", action="back", name="Kept").status_code == 302
    assert wizard.current_step() == "function"
    assert form_data(wizard.page())["function"] == "send"
    wizard.next("function")
    assert form_data(wizard.page())["name"] == "Kept"


def test_steps_cannot_be_skipped(administrator: User, org: Org) -> None:
    wizard = Wizard(administrator)
    response = wizard.client.post(
        WIZARD, {"step": "connector", "name": "Sneaky", "wizard_action": "next"}
    )
    assert response.status_code == 302
    assert wizard.current_step() == "server"
    assert (
        wizard.client.get(WIZARD + "?step=summary")
        .content.decode()
        .count('name="step" value="server"')
    )


def test_cancel_forgets_the_answers_and_changes_nothing(administrator: User, org: Org) -> None:
    wizard = Wizard(administrator)
    up_to_summary(wizard, org)
    response = wizard.press("summary", action="cancel")
    assert response.status_code == 302
    assert wizard.current_step() == "server"
    assert not AcceptedDomain.objects.exists() and not Connector.objects.exists()


# --- Finish: one transaction ------------------------------------------------------------------


def test_finish_changes_nothing_when_the_name_was_taken_meanwhile(
    administrator: User, org: Org
) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(relay_list=["0.0.0.0/0"])
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, close_relay="on")
    summary = form_data(wizard.page())
    # Another administrator creates a connector of that name before Finish is pressed.
    Connector.objects.create(name="Internet Mail Connector", routing_group=org.server.routing_group)

    response = wizard.client.post(WIZARD, {**summary, "wizard_action": "finish"})

    assert response.status_code == 400
    page = pane(response)
    assert "The wizard cannot finish, and nothing was changed" in page
    assert "exists already" in page and 'href="?step=connector"' in page
    assert not AcceptedDomain.objects.exists()
    assert Connector.objects.count() == 1
    assert VirtualServer.objects.get(pk=org.virtual_server.pk).relay_list == ["0.0.0.0/0"]
    assert not AuditEntry.objects.filter(user=administrator).exists()


def test_finish_undoes_everything_when_a_write_fails(
    administrator: User, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    VirtualServer.objects.filter(pk=org.virtual_server.pk).update(relay_list=["0.0.0.0/0"])
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, close_relay="on")

    def collide(self: Connector, spaces: Any) -> None:
        raise IntegrityError("address_space_unique")

    # The last write fails, after the relay was closed and the domains were created.
    monkeypatch.setattr(Connector, "set_address_spaces", collide)
    response = finish(wizard)

    assert response.status_code == 409
    assert "could not finish, and nothing was changed" in pane(response)
    assert not AcceptedDomain.objects.exists() and not Connector.objects.exists()
    assert VirtualServer.objects.get(pk=org.virtual_server.pk).relay_list == ["0.0.0.0/0"]
    assert not AuditEntry.objects.exists()
    assert wizard.current_step() == "summary"  # the answers are kept for another try


def test_finish_refuses_a_plan_that_changed_since_the_summary(
    administrator: User, org: Org
) -> None:
    wizard = Wizard(administrator)
    up_to_summary(wizard, org, domains="example.com\nexample.net")
    summary = form_data(wizard.page())
    AcceptedDomain.objects.create(domain="example.net")  # someone else, meanwhile

    response = wizard.client.post(WIZARD, {**summary, "wizard_action": "finish"})

    assert response.status_code == 409
    assert "the configuration changed since this summary was shown" in pane(response)
    assert AcceptedDomain.objects.count() == 1 and not Connector.objects.exists()
    assert finish(wizard).status_code == 302  # the new summary can be confirmed
    assert sorted(AcceptedDomain.objects.values_list("domain", flat=True)) == [
        "example.com",
        "example.net",
    ]


# --- who may use it ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["view_only", "outsider"])
def test_roles_that_may_not_change_anything_get_a_403(
    request: pytest.FixtureRequest, org: Org, role: str
) -> None:
    client = Client()
    client.force_login(request.getfixturevalue(role))
    assert client.get(WIZARD).status_code == 403
    data = {"step": "server", "server": org.server.pk, "virtual_server": org.virtual_server.pk}
    assert client.post(WIZARD, {**data, "wizard_action": "next"}).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page(org: Org) -> None:
    response = Client().get(WIZARD)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_csrf_is_checked(administrator: User, org: Org) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    data = {"step": "server", "server": org.server.pk, "virtual_server": org.virtual_server.pk}
    assert client.post(WIZARD, data).status_code == 403


def test_the_tree_shows_the_wizard_to_administrators_only(
    administrator: User, view_only: User, org: Org
) -> None:
    admin_page = Wizard(administrator).page()
    assert f'<a href="{WIZARD}" aria-current="page">Internet Mail Wizard</a>' in admin_page
    viewer = Client()
    viewer.force_login(view_only)
    assert "Internet Mail Wizard" not in viewer.get("/connectors/").content.decode()
