"""Reading MAIL FROM / RCPT TO paths: strict RFC 5321, and refused whenever aiosmtpd (which the
protocol layer runs first) reads the same argument as a different mailbox."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.smtp.addresses import ParsedAddress, Reply, echo, parse_path
from smtpadmin.validators import normalize_domain

_loop = asyncio.new_event_loop()
_aiosmtpd = SMTP(object(), loop=_loop)  # only its argument parsing is used: no loop needed
_loop.close()


def aiosmtpd_reading(argument: str) -> str | None:
    """What aiosmtpd 1.4.6 hands to handle_MAIL / handle_RCPT (None: it answers 553 itself)."""
    address, _rest = _aiosmtpd._getaddr(argument)
    return address


def read(argument: str, *, sender: bool = False, smtputf8: bool = True) -> ParsedAddress | Reply:
    """The protocol layer's order: aiosmtpd parses first, then parse_path."""
    try:
        address = aiosmtpd_reading(argument)
    except Exception as error:  # see test_aiosmtpd_raises_on_some_malformed_arguments
        return Reply(500, f"Error: ({type(error).__name__}) {error}")  # its command loop's answer
    if address is None:
        return Reply(553, "5.1.3 Error: malformed address")  # aiosmtpd's own answer
    return parse_path(argument, address, sender=sender, smtputf8=smtputf8)


def address_of(argument: str, *, sender: bool = False, smtputf8: bool = True) -> ParsedAddress:
    parsed = read(argument, sender=sender, smtputf8=smtputf8)
    assert isinstance(parsed, ParsedAddress), parsed
    return parsed


def refusal(argument: str, *, sender: bool = False, smtputf8: bool = True) -> str:
    parsed = read(argument, sender=sender, smtputf8=smtputf8)
    assert isinstance(parsed, Reply), parsed
    return str(parsed)


# --- plain addresses ------------------------------------------------------------------------


def test_a_reply_prints_as_the_line_to_send() -> None:
    assert str(Reply(550, "5.7.1 Relaying denied")) == "550 5.7.1 Relaying denied"


def test_it_reads_a_plain_path_and_lower_cases_only_the_domain() -> None:
    parsed = address_of("<John.Smith@Example.COM>")

    assert parsed == ParsedAddress(
        address="John.Smith@example.com", domain="example.com", local="John.Smith"
    )
    assert not parsed.is_null and not parsed.is_literal and not parsed.needs_smtputf8


def test_it_reads_a_path_without_angle_brackets() -> None:
    assert address_of("user@example.com").address == "user@example.com"


def test_it_ignores_the_parameters_after_the_path() -> None:
    assert address_of("<user@example.com> SIZE=1000 BODY=8BITMIME").address == "user@example.com"
    assert address_of("user@example.com NOTIFY=NEVER").address == "user@example.com"


def test_it_takes_the_blank_after_the_colon() -> None:
    assert address_of(" <user@example.com>").address == "user@example.com"


def test_the_null_path_is_a_sender_but_not_a_recipient() -> None:
    parsed = address_of("<>", sender=True)
    assert parsed.is_null and parsed.address == ""

    assert (
        refusal("<>")
        == "501 5.1.3 Bad recipient address: the null address <> cannot be a recipient"
    )


def test_sender_refusals_carry_the_sender_enhanced_code() -> None:
    assert refusal("<user>", sender=True).startswith("501 5.1.7 Bad sender address:")
    assert refusal("<@a.test:user@b.test>", sender=True).startswith("553 5.1.7")


def test_it_keeps_percent_and_bang_in_the_local_part_for_policy_to_judge() -> None:
    assert address_of("<user%evil.test@example.com>").local == "user%evil.test"
    assert address_of("<evil.test!user@example.com>").local == "evil.test!user"


# --- source routes, '@' in local parts --------------------------------------------------------


@pytest.mark.parametrize(
    "argument",
    [
        "<@relay.test:user@example.com>",
        "<@a.test,@b.test:user@example.com>",
        "<@a.test,:user@example.com>",
        "<@[192.0.2.1]:user@example.com>",
    ],
)
def test_it_refuses_source_routes_that_aiosmtpd_would_silently_drop(argument: str) -> None:
    assert aiosmtpd_reading(argument) == "user@example.com"  # the route is gone there

    assert refusal(argument) == (
        "553 5.1.3 Bad recipient address: source routes (<@relay:user@domain>) are not "
        "accepted; address the mailbox directly as <user@domain>"
    )


@pytest.mark.parametrize(
    "argument",
    ['<"user@evil.test"@example.com>', '<"\\@"@example.com>', '<"a b@c"@example.com>'],
)
def test_it_refuses_a_quoted_local_part_containing_an_at_sign(argument: str) -> None:
    assert refusal(argument) == (
        "553 5.1.3 Bad recipient address: a local part containing '@' is not accepted"
    )


def test_aiosmtpd_itself_refuses_two_bare_at_signs() -> None:
    assert aiosmtpd_reading("<user@evil.test@example.com>") is None


def test_two_bare_at_signs_are_refused_even_if_aiosmtpd_let_them_through() -> None:
    reply = parse_path("<a@evil.test@example.com>", "a@evil.test@example.com", sender=False)

    assert str(reply).startswith("553 5.1.3 Bad recipient address: more than one '@'")


# --- quoting ------------------------------------------------------------------------------


def test_a_needlessly_quoted_local_part_is_written_bare() -> None:
    assert address_of('<"john.doe"@example.com>').address == "john.doe@example.com"
    assert address_of('<"a\\b"@example.com>').address == "ab@example.com"


def test_a_local_part_that_needs_quotes_keeps_them() -> None:
    assert address_of('<"john doe"@example.com>').local == '"john doe"'
    assert address_of('<"john..doe"@example.com>').local == '"john..doe"'
    assert address_of('<"a\\"b"@example.com>').local == '"a\\"b"'
    assert address_of('<"a>b"@example.com>').local == '"a>b"'


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ('<""@example.com>', "empty local part"),
        ('<"a"."b"@example.com>', "a quoted local part must be followed by '@domain'"),
        ('<a."b"@example.com>', "quotes only around the whole local part"),
        ('<"us\x01er"@example.com>', "control or invalid character in the quoted local part"),
    ],
)
def test_it_refuses_bad_quoting(argument: str, reason: str) -> None:
    assert refusal(argument) == f"501 5.1.3 Bad recipient address: {reason}"


# --- syntax -------------------------------------------------------------------------------


DOTS = "a local part cannot start or end with a dot or have two dots in a row"


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("<user@example.com", "missing '>'"),
        ("<user@example.com>SIZE=10", "unexpected text after '>': SIZE=10"),
        ("<user>", "an address needs a domain: <local@domain>"),
        ("<postmaster>", "an address needs a domain: <local@domain>"),
        (
            "<.user@example.com>",
            "a local part cannot start or end with a dot or have two dots in a row",
        ),
        (
            "<user.@example.com>",
            "a local part cannot start or end with a dot or have two dots in a row",
        ),
        (
            "<a..b@example.com>",
            "a local part cannot start or end with a dot or have two dots in a row",
        ),
        ("<user(comment)@example.com>", "'(' is not allowed in a local part"),
        ("<user @ example.com>", "a blank is not allowed in a local part"),
        ("< user@example.com >", "a blank is not allowed in a local part"),
        ("<us\x00er@example.com>", "character U+0000 is not allowed in a local part"),
        ("<user\udcff@example.com>", "character U+DCFF is not allowed in a local part"),
        ("<user@1.2.3.4>", "'1.2.3.4' is not a valid domain name"),
        ("<user@-bad.example>", "'-bad.example' is not a valid domain name"),
        ("<user@example.com(c)>", "'example.com(c)' is not a domain name"),
        ("<user@ex%ample.com>", "'ex%ample.com' is not a domain name"),
        ("<user@exa_mple.com>", "'exa_mple.com' is not a domain name"),
        ("<user@example.com\udcff>", "'example.com?' is not a domain name"),
    ],
)
def test_it_refuses_bad_syntax_with_a_reason(argument: str, reason: str) -> None:
    assert refusal(argument) == f"501 5.1.3 Bad recipient address: {reason}"


@pytest.mark.parametrize(
    "argument",
    [
        "<=?utf-8?q?user=40evil.test?=@example.com>",  # aiosmtpd: "user@evil.test"@example.com
        "<=?utf-8?q?alice?=@example.com>",  # aiosmtpd: alice@example.com
        '<"=?utf-8?q?a?="@example.com>',  # decoded even inside quotes
    ],
)
def test_it_refuses_what_aiosmtpd_reads_as_another_mailbox(argument: str) -> None:
    assert aiosmtpd_reading(argument) not in (None, argument.strip("<>"))

    assert refusal(argument).startswith(
        "501 5.1.3 Bad recipient address: the address reads differently to different parsers"
    )


@pytest.mark.parametrize(
    ("argument", "error"),
    [("=?utf-8?q?@example.com?=a", IndexError), ("a@[@example.com", AttributeError)],
)
def test_aiosmtpd_raises_on_some_malformed_arguments(argument: str, error: type) -> None:
    # email._header_value_parser fails with other errors than HeaderParseError; aiosmtpd's
    # command loop answers "500 Error: (IndexError) ..." and the session goes on.
    with pytest.raises(error):
        aiosmtpd_reading(argument)


def test_it_refuses_an_addr_spec_that_does_not_match_the_raw_argument() -> None:
    assert isinstance(parse_path("<alice@example.com>", "mallory@example.com", sender=False), Reply)
    assert isinstance(parse_path("<alice@example.com>", "alice@evil.test", sender=False), Reply)
    assert isinstance(parse_path("<>", "alice@example.com", sender=True), Reply)
    assert isinstance(parse_path("<alice@example.com>", "<>", sender=True), Reply)


# --- domains ------------------------------------------------------------------------------


def test_aiosmtpd_refuses_a_trailing_dot_itself() -> None:
    assert aiosmtpd_reading("<user@example.com.>") is None


def test_one_trailing_dot_is_dropped_and_two_are_refused() -> None:
    parsed = parse_path("<user@Example.COM.>", "user@Example.COM.", sender=False)
    assert isinstance(parsed, ParsedAddress) and parsed.address == "user@example.com"

    twice = parse_path("<user@example.com..>", "user@example.com..", sender=False)
    assert (
        str(twice) == "501 5.1.3 Bad recipient address: 'example.com..' is not a valid domain name"
    )


@pytest.mark.parametrize(
    "argument",
    [
        "<user@bücher.example>",
        "<user@BÜCHER.example>",
        "<user@xn--bcher-kva.example>",
        "<user@XN--BCHER-KVA.EXAMPLE>",
    ],
)
def test_an_idna_domain_is_read_in_its_lower_case_ascii_form(argument: str) -> None:
    assert address_of(argument).domain == "xn--bcher-kva.example"


def test_fullwidth_letters_and_ideographic_dots_map_to_their_ascii_domain() -> None:
    assert address_of("<user@ｅｘａｍｐｌｅ.com>").domain == "example.com"
    assert address_of("<user@example。com>").domain == "example.com"


def test_invisible_characters_in_a_domain_are_refused() -> None:
    assert refusal("<user@exa\u00admple.com>").startswith("501 5.1.3")  # soft hyphen
    assert refusal("<user@exa\u200dmple.com>").startswith("501 5.1.3")  # zero-width joiner


def test_a_utf8_address_needs_smtputf8() -> None:
    assert address_of("<üser@example.com>").needs_smtputf8
    assert refusal("<üser@example.com>", smtputf8=False) == (
        "553 5.6.7 Bad recipient address: a non-ASCII address needs the SMTPUTF8 parameter "
        "on MAIL FROM"
    )
    assert refusal("<user@bücher.example>", smtputf8=False).startswith("553 5.6.7")


# --- address literals ---------------------------------------------------------------------


def test_a_sender_may_use_an_address_literal() -> None:
    parsed = address_of("<user@[192.0.2.1]>", sender=True)
    assert parsed.domain == "[192.0.2.1]" and parsed.is_literal

    assert address_of("<user@[ipv6:2001:DB8:0::1]>", sender=True).domain == "[IPv6:2001:db8::1]"


@pytest.mark.parametrize("argument", ["<user@[192.0.2.1]>", "<user@[IPv6:2001:db8::1]>"])
def test_a_recipient_may_not_use_an_address_literal(argument: str) -> None:
    assert refusal(argument) == (
        "553 5.1.3 Bad recipient address: address literals are not accepted for recipients; "
        "use a domain name"
    )


@pytest.mark.parametrize(
    "argument",
    ["<user@[evil.test]>", "<user@[RFC-1:x]>", "<user@[ 192.0.2.1 ]>", "<user@[192.0.2.01]>"],
)
def test_it_refuses_malformed_or_general_address_literals(argument: str) -> None:
    assert refusal(argument, sender=True).startswith("501 5.1.7 Bad sender address: '[")


# --- lengths ------------------------------------------------------------------------------


def test_a_local_part_may_have_64_octets_and_no_more() -> None:
    assert address_of(f"<{'a' * 64}@example.com>").local == "a" * 64
    assert refusal(f"<{'a' * 65}@example.com>") == (
        "501 5.1.3 Bad recipient address: local part longer than 64 octets"
    )


def test_utf8_local_parts_are_measured_in_octets() -> None:
    assert refusal(f"<{'ü' * 33}@example.com>").endswith("local part longer than 64 octets")


def test_a_path_may_have_256_octets_and_no_more() -> None:
    domain = ".".join(["d" * 61] * 3) + ".example"  # 193 octets
    local = "a" * (256 - 2 - 1 - len(domain))
    assert len(address_of(f"<{local}@{domain}>").address) == 254
    assert refusal(f"<a{local}@{domain}>").endswith("longer than 256 octets")


def test_a_domain_label_over_63_octets_is_refused() -> None:
    assert refusal(f"<user@{'d' * 64}.example>").startswith("501 5.1.3")


def test_echo_keeps_only_printable_ascii() -> None:
    assert echo("a\r\nb\x00ü\udcff") == "a??b???"
    assert echo("x" * 200, limit=10) == "xxxxxxx..."


# --- properties ---------------------------------------------------------------------------

_TRICKY = st.sampled_from(
    [*'ab.@%!"\\:,<>[] ()', "ü", "。", "ｅ", "=?utf-8?q?", "?=", "=40", "\x00", "\r"]
)
_DOMAINS = st.sampled_from(
    ["example.com", "evil.test", "EXAMPLE.com", "[192.0.2.1]", "bücher.test"]
)


@settings(max_examples=400, deadline=None)
@given(
    local=st.lists(_TRICKY, max_size=12).map("".join),
    domain=_DOMAINS,
    tail=st.lists(_TRICKY, max_size=6).map("".join),
    bracketed=st.booleans(),
)
def test_an_accepted_path_always_names_the_mailbox_aiosmtpd_read(
    local: str, domain: str, tail: str, bracketed: bool
) -> None:
    argument = f"{local}@{domain}{tail}"
    if bracketed:
        argument = f"<{argument}>"
    parsed = read(argument)
    if not isinstance(parsed, ParsedAddress):
        return
    seen = aiosmtpd_reading(argument)
    assert seen is not None
    seen_domain = seen.rpartition("@")[2]
    assert normalize_domain(seen_domain) == parsed.domain
    assert parsed.address.count("@") == 1 and "@" not in parsed.local
    assert parsed.address == f"{parsed.local}@{parsed.domain}"
    assert not any(c in parsed.address for c in "\r\n\x00 ") or parsed.local.startswith('"')
