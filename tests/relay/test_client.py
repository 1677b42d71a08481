"""The outbound SMTP client against real SMTP servers on loopback (tests/sinks.py): batches,
per-recipient results, failover between hops, trouble in the middle of a batch, time-outs.
STARTTLS, HELO and AUTH are in test_client_security.py. Nothing is mocked, and no test may
leave a socket open (``no_socket_left_open``)."""

from __future__ import annotations

import time

import pytest

from relay.delivery.client import (
    BatchResult,
    OutboundMessage,
    OutboundOptions,
    RecipientResult,
)
from relay.delivery.nexthop import HopPlan
from tests.relay.outbound import CONTENT, HELO, OK, OPTIONS, message, plan, replies, send_all
from tests.sinks import SinkFactory

pytestmark = pytest.mark.usefixtures("no_socket_left_open")


# -- a batch ---------------------------------------------------------------------------------


def test_it_sends_a_batch_over_one_connection_with_rset_between_messages(sink: SinkFactory) -> None:
    mx = sink()
    batch = [
        message(1, "bob@example.org"),
        message(2, "carol@example.org", "dave@example.org"),
        message(3, "erin@example.org", sender=""),
    ]

    result = send_all(plan(mx), batch, OPTIONS)

    assert result.hop == f"[127.0.0.1]:{mx.port}"
    assert result.connection_error == ""
    assert replies(result) == {
        1: {"bob@example.org": OK},
        2: {"carol@example.org": OK, "dave@example.org": OK},
        3: {"erin@example.org": OK},
    }
    assert mx.connections == 1
    assert mx.verbs() == [
        "EHLO",
        *["MAIL", "RCPT", "DATA"],
        *["RSET", "MAIL", "RCPT", "RCPT", "DATA"],
        *["RSET", "MAIL", "RCPT", "DATA"],
        "QUIT",
    ]
    assert mx.commands[0] == f"EHLO {HELO}"
    assert [(m.mail_from, m.rcpt_tos) for m in mx.messages] == [
        ("alice@corp.example", ["bob@example.org"]),
        ("alice@corp.example", ["carol@example.org", "dave@example.org"]),
        ("<>", ["erin@example.org"]),
    ]
    assert mx.messages[0].content == CONTENT
    assert all(r.delivered for m in result.results for r in m.recipients.values())


def test_it_sends_crlf_lines_and_dot_stuffs_them(sink: SinkFactory) -> None:
    mx = sink()
    content = b"Subject: dots\n\n.hidden line\r\n..two dots\n.\nlast"

    send_all(plan(mx), [OutboundMessage(1, "a@corp.example", ("b@example.org",), content)], OPTIONS)

    # The sink un-stuffs, as every server does: what arrives is the message, line for line.
    assert mx.messages[0].content == (
        b"Subject: dots\r\n\r\n.hidden line\r\n..two dots\r\n.\r\nlast\r\n"
    )


def test_it_declares_the_size_and_8bit_content(sink: SinkFactory) -> None:
    mx = sink()
    content = "Subject: café\r\n\r\nDéjà vu.\r\n".encode()

    send_all(plan(mx), [OutboundMessage(1, "a@corp.example", ("b@example.org",), content)], OPTIONS)

    assert mx.messages[0].mail_options == [f"SIZE={len(content)}", "BODY=8BITMIME"]
    assert mx.messages[0].content == content


def test_each_recipient_gets_its_own_rcpt_reply(sink: SinkFactory) -> None:
    mx = sink()
    mx.rcpt = lambda address: {
        "gone@example.org": "550 5.1.1 No such user",
        "full@example.org": "452 4.2.2 Mailbox full",
    }.get(address)

    result = send_all(
        plan(mx), [message(1, "bob@example.org", "gone@example.org", "full@example.org")], OPTIONS
    )

    assert replies(result) == {
        1: {
            "bob@example.org": OK,
            "gone@example.org": "550 5.1.1 No such user",
            "full@example.org": "452 4.2.2 Mailbox full",
        }
    }
    assert mx.messages[0].rcpt_tos == ["bob@example.org"]
    assert result.results[0].recipients["gone@example.org"] == RecipientResult(
        550, "5.1.1 No such user"
    )


def test_the_data_reply_is_the_result_of_every_accepted_recipient(sink: SinkFactory) -> None:
    mx = sink()
    mx.rcpt = lambda address: "550 5.1.1 No such user" if address.startswith("gone") else None
    mx.data = lambda received: "554 5.6.0 Content refused"

    result = send_all(
        plan(mx), [message(1, "bob@example.org", "gone@example.org", "carol@example.org")], OPTIONS
    )

    assert replies(result) == {
        1: {
            "bob@example.org": "554 5.6.0 Content refused",
            "gone@example.org": "550 5.1.1 No such user",
            "carol@example.org": "554 5.6.0 Content refused",
        }
    }


def test_no_data_is_sent_when_every_recipient_is_refused(sink: SinkFactory) -> None:
    mx = sink()
    mx.rcpt = lambda address: "550 5.1.1 No such user" if address.startswith("gone") else None

    result = send_all(
        plan(mx), [message(1, "gone@example.org"), message(2, "bob@example.org")], OPTIONS
    )

    assert replies(result) == {
        1: {"gone@example.org": "550 5.1.1 No such user"},
        2: {"bob@example.org": OK},
    }
    assert mx.verbs() == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]


def test_a_refused_sender_is_the_reply_of_every_recipient(sink: SinkFactory) -> None:
    mx = sink()
    mx.mail = lambda sender: "553 5.7.1 Sender not allowed" if sender.startswith("spam") else None

    result = send_all(
        plan(mx),
        [
            message(1, "bob@example.org", "carol@example.org", sender="spam@corp.example"),
            message(2, "dave@example.org"),
        ],
        OPTIONS,
    )

    assert replies(result) == {
        1: {
            "bob@example.org": "553 5.7.1 Sender not allowed",
            "carol@example.org": "553 5.7.1 Sender not allowed",
        },
        2: {"dave@example.org": OK},
    }
    assert mx.verbs()[:3] == ["EHLO", "MAIL", "RSET"]


def test_the_masquerade_domain_replaces_the_envelope_senders_domain(sink: SinkFactory) -> None:
    mx = sink()
    options = OutboundOptions(helo_name=HELO, mail_from_domain_masquerade="mail.example.com")

    send_all(plan(mx), [message(1), message(2, sender="")], options)

    assert [m.mail_from for m in mx.messages] == ["alice@mail.example.com", "<>"]
    # Only the envelope: the header the recipient reads is the author's.
    assert b"From: alice@corp.example\r\n" in mx.messages[0].content


def test_nothing_is_sent_for_an_empty_batch(sink: SinkFactory) -> None:
    mx = sink()

    assert send_all(plan(mx), [], OPTIONS) == BatchResult(())
    assert mx.connections == 0


def test_a_message_bigger_than_the_hop_takes_fails_without_being_sent(sink: SinkFactory) -> None:
    mx = sink(size_limit=200)
    big = OutboundMessage(
        1, "a@corp.example", ("b@example.org",), b"Subject: big\r\n\r\n" + b"x" * 300
    )

    result = send_all(plan(mx), [big, message(2)], OPTIONS)

    size = len(big.content) + 2  # the final CRLF the client adds
    assert replies(result)[1] == {
        "b@example.org": f"552 5.3.4 Message too big for [127.0.0.1]:{mx.port}: {size} bytes,"
        " it takes 200"
    }
    assert replies(result)[2] == {"bob@example.org": OK}
    assert mx.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_non_ascii_addresses_go_with_smtputf8_when_offered(sink: SinkFactory) -> None:
    mx = sink()

    result = send_all(
        plan(mx), [message(1, "jörg@example.org", sender="zoë@corp.example")], OPTIONS
    )

    assert replies(result) == {1: {"jörg@example.org": OK}}
    assert mx.messages[0].rcpt_tos == ["jörg@example.org"]
    assert "SMTPUTF8" in mx.messages[0].mail_options


def test_non_ascii_addresses_fail_where_smtputf8_is_not_offered(sink: SinkFactory) -> None:
    mx = sink(smtputf8=False)

    result = send_all(plan(mx), [message(1, "jörg@example.org")], OPTIONS)

    assert replies(result) == {
        1: {
            "jörg@example.org": f"550 5.6.7 [127.0.0.1]:{mx.port} does not offer SMTPUTF8,"
            " which a non-ASCII address needs"
        }
    }
    assert "MAIL" not in mx.verbs()


# -- failing over ----------------------------------------------------------------------------


def test_a_refused_connection_moves_on_to_the_next_hop(
    sink: SinkFactory, refusing_port: int
) -> None:
    backup = sink()

    result = send_all(plan(refusing_port, backup), [message()], OPTIONS)

    assert result.hop == f"[127.0.0.1]:{backup.port}"
    assert result.hop_errors == (f"4.4.1 Connection refused by [127.0.0.1]:{refusing_port}",)
    assert replies(result) == {1: {"bob@example.org": OK}}


def test_a_421_greeting_moves_on_to_the_next_hop(sink: SinkFactory) -> None:
    busy, backup = sink(), sink()
    busy.greeting = "421 4.3.2 Too busy, try later"

    result = send_all(plan(busy, backup), [message()], OPTIONS)

    assert result.hop == f"[127.0.0.1]:{backup.port}"
    assert result.hop_errors == (
        f"4.4.2 [127.0.0.1]:{busy.port} answered 421 4.3.2 Too busy, try later while waiting"
        " for the greeting",
    )
    assert len(backup.messages) == 1
    assert busy.messages == []


@pytest.mark.parametrize("stage", ["GREETING", "EHLO", "MAIL"])
def test_a_connection_dropped_before_mail_from_is_answered_moves_on_to_the_next_hop(
    sink: SinkFactory, stage: str
) -> None:
    flaky, backup = sink(), sink()
    flaky.drop_at(stage)

    result = send_all(plan(flaky, backup), [message(1), message(2)], OPTIONS)

    assert result.hop == f"[127.0.0.1]:{backup.port}"
    assert result.hop_errors[0].startswith(f"4.4.2 Lost connection with [127.0.0.1]:{flaky.port}")
    assert [m.rcpt_tos for m in backup.messages] == [["bob@example.org"], ["bob@example.org"]]


def test_a_stalled_greeting_times_out_and_moves_on(sink: SinkFactory) -> None:
    slow, backup = sink(), sink()
    slow.stall_at("GREETING", 10)

    started = time.monotonic()
    result = send_all(plan(slow, backup), [message()], OutboundOptions(HELO, timeout=0.5))

    assert time.monotonic() - started < 3
    assert result.hop_errors == (
        f"4.4.2 Conversation with [127.0.0.1]:{slow.port} timed out while waiting for the greeting",
    )
    assert len(backup.messages) == 1


def test_when_no_hop_can_be_used_the_batch_fails_at_the_connection_level(
    sink: SinkFactory, refusing_port: int
) -> None:
    busy = sink(greeting="421 4.3.2 Not now")

    result = send_all(plan(busy, refusing_port), [message(1), message(2)], OPTIONS)

    assert result.results == ()
    assert result.connection_level is True
    assert result.connection_error == f"4.4.1 Connection refused by [127.0.0.1]:{refusing_port}"
    assert len(result.hop_errors) == 2
    assert result.hop == ""


def test_a_plan_without_hops_gives_its_own_error_and_contacts_nobody(sink: SinkFactory) -> None:
    result = send_all(
        HopPlan((), permanent_error="5.1.10 Null MX: null.example accepts no mail (RFC 7505)"),
        [message()],
        OPTIONS,
    )

    assert result == BatchResult(
        (), connection_error="5.1.10 Null MX: null.example accepts no mail (RFC 7505)"
    )


# -- trouble in the middle of a batch ---------------------------------------------------------


def test_a_421_in_the_middle_of_a_batch_is_the_result_of_everything_left(
    sink: SinkFactory,
) -> None:
    mx, backup = sink(), sink()
    mx.rcpt = lambda address: "421 4.3.2 Shutting down" if address == "carol@example.org" else None
    batch = [
        message(1, "bob@example.org"),
        message(2, "dave@example.org", "carol@example.org", "erin@example.org"),
        message(3, "frank@example.org"),
    ]

    result = send_all(plan(mx, backup), batch, OPTIONS)

    left = "421 4.3.2 Shutting down"
    assert replies(result) == {
        1: {"bob@example.org": OK},
        2: {"dave@example.org": left, "carol@example.org": left, "erin@example.org": left},
        3: {"frank@example.org": left},
    }
    assert result.hop == f"[127.0.0.1]:{mx.port}"
    assert not any(r.delivered for r in result.results[1].recipients.values())
    assert mx.verbs()[-1] == "RCPT"  # the sink hung up; nobody said more
    assert backup.connections == 0  # mail was under way: no second copy elsewhere


def test_a_connection_dropped_after_data_leaves_the_rest_of_the_batch_waiting(
    sink: SinkFactory,
) -> None:
    mx = sink()
    mx.drop_at("END-OF-DATA", after=1)  # accepts the first message, then hangs up

    result = send_all(plan(mx), [message(1), message(2), message(3)], OPTIONS)

    lost = (
        f"451 4.4.2 Lost connection with [127.0.0.1]:{mx.port} while sending end of data"
        " -- message may be sent more than once"
    )
    assert replies(result) == {
        1: {"bob@example.org": OK},
        2: {"bob@example.org": lost},
        3: {"bob@example.org": lost},
    }
    assert len(mx.messages) == 1
    assert not result.results[1].recipients["bob@example.org"].permanent


def test_a_drop_after_the_first_message_started_is_not_retried_on_another_hop(
    sink: SinkFactory,
) -> None:
    mx, backup = sink(), sink()
    mx.drop_at("DATA")

    result = send_all(plan(mx, backup), [message()], OPTIONS)

    assert replies(result) == {
        1: {
            "bob@example.org": f"451 4.4.2 Lost connection with [127.0.0.1]:{mx.port} while"
            " sending DATA"
        }
    }
    assert backup.connections == 0


def test_a_stalled_hop_times_out_and_the_message_waits(sink: SinkFactory) -> None:
    mx = sink()
    mx.stall_at("END-OF-DATA", 10)

    started = time.monotonic()
    result = send_all(plan(mx), [message(1), message(2)], OutboundOptions(HELO, timeout=0.5))

    assert time.monotonic() - started < 3
    timed_out = (
        f"451 4.4.2 Conversation with [127.0.0.1]:{mx.port} timed out while sending end of data"
        " -- message may be sent more than once"
    )
    assert replies(result) == {1: {"bob@example.org": timed_out}, 2: {"bob@example.org": timed_out}}
    mx.wait_idle()  # and the client hung up rather than wait on
