"""The organization's default limits (Message Delivery > Defaults) as session policy decides
them: the smaller of the organization's and the virtual server's limit applies; receiving for
mail into the accepted domains, sending for mail the organization's users send or that
leaves it; and the send limit's reply."""

from __future__ import annotations

import datetime
from dataclasses import replace

from connectors.snapshot import AcceptedDomainFacts
from relay.smtp.addresses import ParsedAddress, parse_path
from relay.smtp.config import KB, Directory, ListenerConfig, OrganizationPolicy
from relay.smtp.loader import organization_policy
from relay.smtp.policy import (
    largest_message,
    message_config,
    message_size_limit,
    organization_sizes_apply,
    recipient_count_reply,
    recipient_size_limit,
    recipient_size_reply,
    recipients_limit,
    send_limit_reply,
    size_refusal,
)
from smtpadmin.models import Organization

VS = ListenerConfig(id=1, message_size_limit=4096 * KB, recipients_per_message=100)
SMALL = OrganizationPolicy(sending_size_limit=2048 * KB, receiving_size_limit=1024 * KB)
DIRECTORY = Directory(
    accepted_domains=(
        AcceptedDomainFacts("smtpadmin.test", "authoritative"),
        AcceptedDomainFacts("partner.test", "internal_relay"),
    ),
    mailboxes=frozenset({"alice@smtpadmin.test"}),
)


def address(text: str) -> ParsedAddress:
    parsed = parse_path(f"<{text}>", text, sender=False, smtputf8=False)
    assert isinstance(parsed, ParsedAddress)
    return parsed


# --- which limit applies ------------------------------------------------------------------


def test_the_smaller_of_the_virtual_server_and_the_organization_limit_applies() -> None:
    assert message_size_limit(VS, SMALL, sending=False, receiving=True) == 1024 * KB
    assert message_size_limit(VS, SMALL, sending=True, receiving=False) == 2048 * KB
    assert message_size_limit(VS, SMALL, sending=True, receiving=True) == 1024 * KB
    # The virtual server's own limit is smaller.
    tight = replace(VS, message_size_limit=512 * KB)
    assert message_size_limit(tight, SMALL, sending=True, receiving=True) == 512 * KB
    # Neither kind: the virtual server's; no limit anywhere: none.
    assert message_size_limit(VS, SMALL, sending=False, receiving=False) == 4096 * KB
    unlimited = replace(VS, message_size_limit=None)
    assert message_size_limit(unlimited, OrganizationPolicy(), sending=True, receiving=True) is None
    assert message_size_limit(unlimited, SMALL, sending=False, receiving=True) == 1024 * KB


def test_organization_sizes_matter_only_when_smaller_than_the_virtual_server_limit() -> None:
    assert organization_sizes_apply(VS, SMALL)
    assert not organization_sizes_apply(VS, OrganizationPolicy())
    big = OrganizationPolicy(sending_size_limit=10240 * KB, receiving_size_limit=4096 * KB)
    assert not organization_sizes_apply(VS, big)
    assert organization_sizes_apply(replace(VS, message_size_limit=None), big)


def test_a_recipient_in_an_accepted_domain_takes_the_receiving_limit() -> None:
    for rcpt in ("alice@smtpadmin.test", "someone@partner.test"):
        limit = recipient_size_limit(4096 * KB, address(rcpt), VS, SMALL, DIRECTORY)
        assert limit == 1024 * KB, rcpt


def test_a_recipient_outside_the_accepted_domains_takes_the_sending_limit() -> None:
    limit = recipient_size_limit(4096 * KB, address("bob@elsewhere.test"), VS, SMALL, DIRECTORY)
    assert limit == 2048 * KB
    # The message's limit only ever goes down as recipients are added.
    assert recipient_size_limit(1024 * KB, address("b@elsewhere.test"), VS, SMALL, DIRECTORY) == (
        1024 * KB
    )


def test_the_largest_message_a_session_can_send_depends_on_who_it_is() -> None:
    def largest(**facts: bool) -> int | None:
        return largest_message(VS, SMALL, **facts)

    # Authenticated: the organization's user sends; the sending limit covers everything.
    assert largest(authenticated=True, may_authenticate=True, may_relay=True) == 2048 * KB
    # Anonymous, may neither relay nor authenticate: only into the accepted domains.
    assert largest(authenticated=False, may_authenticate=False, may_relay=False) == 1024 * KB
    # May relay or may still authenticate: either way, the more generous limit.
    assert largest(authenticated=False, may_authenticate=False, may_relay=True) == 2048 * KB
    assert largest(authenticated=False, may_authenticate=True, may_relay=False) == 2048 * KB
    # An organization without a sending limit leaves the virtual server's.
    open_sending = replace(SMALL, sending_size_limit=None)
    assert (
        largest_message(
            VS, open_sending, authenticated=False, may_authenticate=True, may_relay=False
        )
        == 4096 * KB
    )


# --- replies ------------------------------------------------------------------------------


def test_a_declared_size_over_the_session_limit_is_refused_at_mail() -> None:
    assert size_refusal(1024 * KB, 0, VS, 1024 * KB) is None
    assert str(size_refusal(1024 * KB + 1, 0, VS, 1024 * KB)) == (
        "552 5.3.4 Message size exceeds fixed maximum message size (1048576 bytes)"
    )


def test_a_declared_size_over_a_recipient_limit_refuses_that_recipient() -> None:
    assert recipient_size_reply(1024 * KB, 1024 * KB, "alice@smtpadmin.test") is None
    assert recipient_size_reply(None, 1024 * KB, "alice@smtpadmin.test") is None
    assert recipient_size_reply(10**9, None, "alice@smtpadmin.test") is None
    assert str(recipient_size_reply(1024 * KB + 1, 1024 * KB, "alice@smtpadmin.test")) == (
        "552 5.3.4 Message size exceeds fixed maximum message size for "
        "<alice@smtpadmin.test> (1048576 bytes)"
    )


def test_the_message_configuration_carries_the_message_limit() -> None:
    assert message_config(VS, VS.message_size_limit) is VS
    assert message_config(VS, 1024 * KB).message_size_limit == 1024 * KB
    assert message_config(VS, None).message_size_limit is None


def test_recipients_per_message_is_the_smaller_limit() -> None:
    org = OrganizationPolicy(recipients_per_message=3)
    assert recipients_limit(VS, org) == 3
    assert recipients_limit(VS, OrganizationPolicy(recipients_per_message=500)) == 100
    assert recipients_limit(replace(VS, recipients_per_message=None), org) == 3
    assert recipients_limit(replace(VS, recipients_per_message=None), OrganizationPolicy()) is None
    assert recipient_count_reply(2, VS, org) is None
    assert str(recipient_count_reply(3, VS, org)) == (
        "452 4.5.3 Too many recipients (limit 3 per message); send the rest later"
    )


def test_the_send_limit_reply_says_when_the_next_hour_starts() -> None:
    now = datetime.datetime(2026, 12, 3, 18, 42, 5, tzinfo=datetime.UTC)
    assert str(send_limit_reply("app", 3, now)) == (
        "450 4.7.1 Send limit reached: app may send 3 messages per hour; try again after 19:00 UTC"
    )
    late = datetime.datetime(2026, 12, 3, 23, 59, 59, tzinfo=datetime.UTC)
    assert "after 00:00 UTC" in str(send_limit_reply("app\r\nx", 3, late))
    assert "app??x" in str(send_limit_reply("app\r\nx", 3, late))


# --- what the relay reads -----------------------------------------------------------------


def test_the_loader_reads_the_organization_limits_in_bytes() -> None:
    organization = Organization(
        sending_size_limit_kb=2048, receiving_size_limit_kb=None, recipients_limit=7
    )
    policy = organization_policy(organization)
    assert policy.sending_size_limit == 2048 * KB
    assert policy.receiving_size_limit is None
    assert policy.recipients_per_message == 7
