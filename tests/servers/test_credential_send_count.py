"""The SMTP credential's messages this hour (the send limit's count, kept by the relay): shown
on the credential list and sheet, and read-only in the API."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from relay.smtp.send_limits import SendLimit, take_message
from servers.models import SmtpCredential
from tests.servers.console_world import World, build_world, html_of, logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def counted(credential: SmtpCredential, messages: int, limit: int = 3) -> SmtpCredential:
    SmtpCredential.objects.filter(pk=credential.pk).update(send_limit_per_hour=limit)
    for _ in range(messages):
        assert take_message(SendLimit(credential.pk, credential.username, limit))
    credential.refresh_from_db()
    return credential


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_list_and_the_sheet_show_the_messages_sent_this_hour(
    administrator: User, world: World
) -> None:
    counted(world.credential, 2)
    client = logged_in(administrator)
    listing = text_of(html_of(client.get("/servers/smtp-credentials/")))
    assert "Sent this hour" in listing and "2 of 3" in listing
    sheet = text_of(html_of(client.get(f"/servers/smtp-credentials/{world.credential.pk}/")))
    assert "Messages sent this hour 2 of 3" in sheet


def test_a_count_from_an_earlier_hour_shows_as_none(administrator: User, world: World) -> None:
    credential = counted(world.credential, 2)
    SmtpCredential.objects.filter(pk=credential.pk).update(sent_hour=credential.sent_hour - 1)
    sheet = text_of(
        html_of(logged_in(administrator).get(f"/servers/smtp-credentials/{credential.pk}/"))
    )
    assert "Messages sent this hour 0 of 3" in sheet


def test_the_api_shows_the_count_and_never_writes_it(
    administrator: User, api_as: Any, world: World
) -> None:
    credential = counted(world.credential, 2)
    url = f"/api/v1/smtp-credentials/{credential.pk}/"
    assert api_as(administrator).get(url).json()["sent_this_hour"] == 2
    response = api_as(administrator).patch(url, {"sent_this_hour": 0}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["sent_this_hour"] == 2
    # The counter's own columns are no fields of the API at all.
    response = api_as(administrator).patch(url, {"sent_in_hour": 0}, format="json")
    assert response.status_code == 400
    fresh = SmtpCredential.objects.get(pk=credential.pk)
    assert fresh.sent_this_hour() == 2


def test_the_count_belongs_to_the_hour_it_was_taken_in(world: World) -> None:
    credential = counted(world.credential, 1)
    now = datetime.datetime.now(datetime.UTC)
    assert credential.sent_this_hour(now) == 1
    assert credential.sent_this_hour(now + datetime.timedelta(hours=1)) == 0
