"""/metrics: closed by default; any role's API token or session, the scrape token or an
allowed address opens it; what it shows parses as Prometheus text and follows the counts."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from relay.metrics import LATENCY_BUCKETS
from servers.models import Server
from smtpadmin.counters import Counters
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.smtpadmin.test_api_permissions import make_server

pytestmark = pytest.mark.django_db


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def token_for(role: Role) -> str:
    return Token.objects.create(user=make_person(f"scraper-{role.slug}", role)).key


def test_closed_to_anyone_unknown() -> None:
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"smtpadmin_" not in response.content
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Token nonsense").status_code == 401
    # No scrape token configured: a bearer token opens nothing.
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@override_settings(SMTPADMIN_METRICS_TOKEN="s3cret-scrape-token")
def test_the_scrape_token_opens_it_and_a_wrong_one_does_not() -> None:
    ok = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=0.0.4")
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokem")
    assert wrong.status_code == 401


def test_any_administrator_token_or_session_opens_it_a_user_without_role_is_refused() -> None:
    view_only = Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {token_for(Role.VIEW_ONLY)}")
    assert view_only.status_code == 200
    nobody = Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {token_for(Role.NONE)}")
    assert nobody.status_code == 403
    browser = Client()
    browser.force_login(make_person("browser-admin", Role.ADMINISTRATOR))
    assert browser.get("/metrics").status_code == 200


@override_settings(SMTPADMIN_METRICS_ALLOW=["192.0.2.0/28"])
def test_an_allowed_address_needs_no_token() -> None:
    assert Client(REMOTE_ADDR="192.0.2.9").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.99").get("/metrics").status_code == 401


@override_settings(SMTPADMIN_METRICS_TOKEN="t")
def test_it_shows_the_counts_the_histogram_and_the_servers() -> None:
    counters = Counters()
    counters.add("messages_received", {"virtual_server": "Default"}, n=3)
    counters.add("deliveries", {"connector": "Internet", "result": "delivered"}, n=2)
    counters.observe("delivery_seconds", 0.2, {"connector": "Internet"}, LATENCY_BUCKETS)
    counters.observe("delivery_seconds", 0.4, {"connector": "Internet"}, LATENCY_BUCKETS)
    counters.flush()
    edge = make_server("edge1")
    Server.objects.filter(pk=edge.pk).update(
        last_seen=timezone.now() - datetime.timedelta(seconds=90)
    )
    body = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer t").content
    found = samples(body)
    assert found[("smtpadmin_messages_received_total", (("virtual_server", "Default"),))] == 3
    delivered = (("connector", "Internet"), ("result", "delivered"))
    assert found[("smtpadmin_deliveries_total", delivered)] == 2
    internet = ("connector", "Internet")
    assert found[("smtpadmin_delivery_seconds_bucket", (internet, ("le", "0.1")))] == 0
    assert found[("smtpadmin_delivery_seconds_bucket", (internet, ("le", "0.25")))] == 1
    assert found[("smtpadmin_delivery_seconds_bucket", (internet, ("le", "0.5")))] == 2
    assert found[("smtpadmin_delivery_seconds_bucket", (internet, ("le", "3600")))] == 2
    assert found[("smtpadmin_delivery_seconds_bucket", (internet, ("le", "+Inf")))] == 2
    assert found[("smtpadmin_delivery_seconds_count", (internet,))] == 2
    assert found[("smtpadmin_delivery_seconds_sum", (internet,))] == pytest.approx(0.6)
    age = found[("smtpadmin_server_heartbeat_age_seconds", (("server", "edge1"),))]
    assert 89 <= age < 300
    assert found[("smtpadmin_queue_entries", (("state", "ready"),))] == 0
    assert ("smtpadmin_oldest_waiting_seconds", ()) in found
