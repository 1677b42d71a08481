"""The pure parsing and normalising functions every model, form and API call validates through."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from smtpadmin.validators import (
    SCHEDULE_SLOTS,
    SmartHost,
    host_list_matches,
    normalize_address,
    normalize_domain,
    normalize_domain_pattern,
    normalize_host_list,
    normalize_ip_list,
    normalize_sender_pattern,
    normalize_smart_hosts,
    parse_host_entry,
    parse_smart_hosts,
    pattern_matches,
    pattern_specificity,
    sender_pattern_matches,
    validate_schedule_grid,
)

LONGEST_LABEL = "a" * 63
LONGEST_NAME = ".".join([LONGEST_LABEL] * 3 + ["b" * 61])  # 253 characters


def test_a_name_of_253_characters_is_the_longest_accepted() -> None:
    assert len(LONGEST_NAME) == 253
    assert normalize_domain(LONGEST_NAME + ".") == LONGEST_NAME
    with pytest.raises(ValidationError):
        normalize_domain("c" + LONGEST_NAME)


# --- normalize_domain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("example.com", "example.com", id="plain"),
        pytest.param("Example.COM", "example.com", id="upper-case"),
        pytest.param("example.com.", "example.com", id="trailing-dot"),
        pytest.param("  mail.example.com  ", "mail.example.com", id="blanks-around"),
        pytest.param("Bücher.DE", "xn--bcher-kva.de", id="idna"),
        pytest.param("xn--bcher-kva.de", "xn--bcher-kva.de", id="already-punycode"),
        pytest.param("XN--BCHER-KVA.DE", "xn--bcher-kva.de", id="upper-case-punycode"),
        pytest.param("bücher.de.", "xn--bcher-kva.de", id="idna-with-trailing-dot"),
        pytest.param("localhost", "localhost", id="single-label"),
        pytest.param("mail-1.example.com", "mail-1.example.com", id="hyphen-and-digit"),
        pytest.param("1.example.com", "1.example.com", id="numeric-first-label"),
        pytest.param(f"{LONGEST_LABEL}.com", f"{LONGEST_LABEL}.com", id="63-character-label"),
        pytest.param(LONGEST_NAME, LONGEST_NAME, id="253-character-name"),
    ],
)
def test_it_normalises_a_domain_name(typed: str, stored: str) -> None:
    assert normalize_domain(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(".", id="only-a-dot"),
        pytest.param("exa mple.com", id="space-inside"),
        pytest.param("-example.com", id="label-starts-with-hyphen"),
        pytest.param("example-.com", id="label-ends-with-hyphen"),
        pytest.param("ex_ample.com", id="underscore"),
        pytest.param("example..com", id="empty-label"),
        pytest.param(".example.com", id="leading-dot"),
        pytest.param("example.com..", id="two-trailing-dots"),
        pytest.param("exa!mple.com", id="punctuation"),
        pytest.param(f"{LONGEST_LABEL}a.com", id="64-character-label"),
        pytest.param("c" + LONGEST_NAME, id="254-character-name"),
        pytest.param("*.example.com", id="wildcard"),
        pytest.param("*", id="star"),
        pytest.param("user@example.com", id="address"),
        pytest.param("example.com:25", id="with-port"),
        pytest.param("[192.0.2.1]", id="address-literal"),
    ],
)
def test_it_refuses_what_is_not_a_domain_name(typed: str) -> None:
    with pytest.raises(ValidationError):
        normalize_domain(typed)


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("192.0.2.1", id="ipv4"),
        pytest.param("192.0.2.1.", id="ipv4-with-trailing-dot"),
        pytest.param("example.123", id="numeric-top-level-label"),
        pytest.param("123", id="a-number"),
        pytest.param("2001:db8::1", id="ipv6"),
    ],
)
def test_it_refuses_an_ip_address_where_a_domain_name_is_expected(typed: str) -> None:
    with pytest.raises(ValidationError):
        normalize_domain(typed)


def test_it_says_an_ip_looking_name_looks_like_an_ip_address() -> None:
    with pytest.raises(ValidationError, match="looks like an IP address"):
        normalize_domain("192.0.2.1")


def test_it_asks_for_a_domain_name_when_there_is_none() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_domain("  ")
    assert caught.value.code == "required"


# --- normalize_domain_pattern -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("*", "*", id="star"),
        pytest.param("  *  ", "*", id="star-with-blanks"),
        pytest.param("*.com", "*.com", id="wildcard-top-level"),
        pytest.param("*.Example.COM", "*.example.com", id="wildcard-upper-case"),
        pytest.param("*.example.com.", "*.example.com", id="wildcard-trailing-dot"),
        pytest.param("*.Bücher.de", "*.xn--bcher-kva.de", id="wildcard-idna"),
        pytest.param("Example.com.", "example.com", id="domain"),
        pytest.param("Bücher.DE", "xn--bcher-kva.de", id="domain-idna"),
    ],
)
def test_it_normalises_a_domain_pattern(typed: str, stored: str) -> None:
    assert normalize_domain_pattern(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("**", id="two-stars"),
        pytest.param("*example.com", id="star-without-dot"),
        pytest.param("example.*", id="star-at-the-end"),
        pytest.param("a.*.com", id="star-in-the-middle"),
        pytest.param("*.*.com", id="two-wildcards"),
        pytest.param("*.", id="nothing-after-the-star"),
        pytest.param("*.192.0.2.1", id="wildcard-over-an-ip"),
        pytest.param("192.0.2.1", id="an-ip"),
        pytest.param("ex ample.com", id="space"),
        pytest.param("example.com/24", id="subnet-syntax"),
    ],
)
def test_it_refuses_a_malformed_domain_pattern(typed: str) -> None:
    with pytest.raises(ValidationError):
        normalize_domain_pattern(typed)


# --- pattern_matches / pattern_specificity ----------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "domain", "matches"),
    [
        pytest.param("*", "example.com", True, id="star-covers-everything"),
        pytest.param("*.example.com", "mail.example.com", True, id="wildcard-covers-a-sub-domain"),
        pytest.param("*.example.com", "a.b.example.com", True, id="wildcard-covers-deeper"),
        pytest.param("*.example.com", "example.com", False, id="wildcard-not-its-parent"),
        pytest.param(
            "*.example.com", "badexample.com", False, id="wildcard-not-a-suffix-lookalike"
        ),
        pytest.param("*.example.com", "example.com.evil.org", False, id="wildcard-not-a-prefix"),
        pytest.param("*.com", "example.com", True, id="top-level-wildcard"),
        pytest.param("*.com", "example.org", False, id="top-level-wildcard-other-tld"),
        pytest.param("example.com", "example.com", True, id="exact"),
        pytest.param("example.com", "mail.example.com", False, id="exact-not-a-sub-domain"),
        pytest.param("example.com", "example.org", False, id="exact-other-domain"),
    ],
)
def test_a_pattern_covers_exactly_the_domains_it_should(
    pattern: str, domain: str, matches: bool
) -> None:
    assert pattern_matches(pattern, domain) is matches


def test_patterns_rank_from_the_most_specific_to_the_least() -> None:
    patterns = ["*", "*.com", "sub.example.com", "*.example.com", "example.com"]
    ranked = sorted(patterns, key=pattern_specificity, reverse=True)
    assert ranked == ["sub.example.com", "example.com", "*.example.com", "*.com", "*"]


@pytest.mark.parametrize(
    "domain", ["example.com", "mail.example.com", "a.b.c.example.com", "localhost"]
)
def test_an_exact_name_outranks_every_wildcard_that_covers_it(domain: str) -> None:
    labels = domain.split(".")
    wildcards = ["*"] + ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    assert all(pattern_matches(w, domain) for w in wildcards)
    assert all(pattern_specificity(domain) > pattern_specificity(w) for w in wildcards)


def test_a_deeper_wildcard_outranks_a_shallower_one() -> None:
    assert pattern_specificity("*.sub.example.com") > pattern_specificity("*.example.com")
    assert pattern_specificity("*.example.com") > pattern_specificity("*.com")
    assert pattern_specificity("*.com") > pattern_specificity("*")


# --- addresses and sender patterns ------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("user@Example.COM", "user@example.com", id="domain-lower-cased"),
        pytest.param("First.Last@example.com", "First.Last@example.com", id="local-part-as-typed"),
        pytest.param("user+tag@Bücher.de", "user+tag@xn--bcher-kva.de", id="idna-domain"),
        pytest.param("  a@b.example  ", "a@b.example", id="blanks-around"),
        pytest.param("o'brien@example.com", "o'brien@example.com", id="apostrophe"),
    ],
)
def test_it_normalises_an_address(typed: str, stored: str) -> None:
    assert normalize_address(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("user", id="no-at-sign"),
        pytest.param("user@", id="no-domain"),
        pytest.param("@example.com", id="no-local-part"),
        pytest.param("a@b@example.com", id="two-at-signs"),
        pytest.param(".user@example.com", id="leading-dot"),
        pytest.param("user.@example.com", id="trailing-dot"),
        pytest.param("us..er@example.com", id="two-dots"),
        pytest.param("us er@example.com", id="space"),
        pytest.param("jörg@example.com", id="non-ascii-local-part"),
        pytest.param("a" * 65 + "@example.com", id="65-character-local-part"),
        pytest.param("user@192.0.2.1", id="ip-domain"),
        pytest.param("user@[192.0.2.1]", id="address-literal"),
        pytest.param("user@*.example.com", id="wildcard-domain"),
    ],
)
def test_it_refuses_a_malformed_address(typed: str) -> None:
    with pytest.raises(ValidationError):
        normalize_address(typed)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("*@Example.com", "*@example.com", id="whole-domain"),
        pytest.param("@Example.com", "*@example.com", id="at-domain-means-whole-domain"),
        pytest.param("*@Bücher.de", "*@xn--bcher-kva.de", id="whole-idna-domain"),
        pytest.param("User@Example.COM", "user@example.com", id="address-lower-cased"),
        pytest.param(" user@example.com ", "user@example.com", id="blanks-around"),
    ],
)
def test_it_normalises_a_sender_pattern(typed: str, stored: str) -> None:
    assert normalize_sender_pattern(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("*", id="star"),
        pytest.param("*@", id="star-at-nothing"),
        pytest.param("*@*.example.com", id="wildcard-domain"),
        pytest.param("*@192.0.2.1", id="ip-domain"),
        pytest.param("user", id="no-at-sign"),
        pytest.param("user@*", id="address-at-star"),
        pytest.param("a*b@example.com@x", id="garbage"),
    ],
)
def test_it_refuses_a_malformed_sender_pattern(typed: str) -> None:
    with pytest.raises(ValidationError):
        normalize_sender_pattern(typed)


@pytest.mark.parametrize(
    ("pattern", "sender", "matches"),
    [
        pytest.param("*@example.com", "someone@example.com", True, id="domain-pattern"),
        pytest.param("*@example.com", "Someone@EXAMPLE.com", True, id="domain-pattern-any-case"),
        pytest.param("*@example.com", "someone@sub.example.com", False, id="not-a-sub-domain"),
        pytest.param("*@example.com", "someone@example.org", False, id="not-another-domain"),
        pytest.param("*@example.com", "", False, id="not-the-null-sender"),
        pytest.param("user@example.com", "USER@example.com", True, id="address-any-case"),
        pytest.param("user@example.com", "other@example.com", False, id="not-another-address"),
    ],
)
def test_a_sender_pattern_matches_the_senders_it_should(
    pattern: str, sender: str, matches: bool
) -> None:
    assert sender_pattern_matches(pattern, sender) is matches


# --- smart hosts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        pytest.param("mail.example.com", "mail.example.com", id="host"),
        pytest.param("Mail.Example.COM.", "mail.example.com", id="host-normalised"),
        pytest.param("mail.example.com:587", "mail.example.com:587", id="host-port"),
        pytest.param("smtp.bücher.de", "smtp.xn--bcher-kva.de", id="idna-host"),
        pytest.param("relay", "relay", id="single-label-host"),
        pytest.param("relay:1", "relay:1", id="lowest-port"),
        pytest.param("relay:65535", "relay:65535", id="highest-port"),
        pytest.param("relay:0025", "relay:25", id="port-with-leading-zeros"),
        pytest.param("[192.0.2.1]", "[192.0.2.1]", id="ipv4-literal"),
        pytest.param("[192.0.2.1]:2525", "[192.0.2.1]:2525", id="ipv4-literal-port"),
        pytest.param("[IPv6:2001:DB8::1]", "[IPv6:2001:db8::1]", id="ipv6-literal"),
        pytest.param(
            "[ipv6:2001:db8:0:0:0:0:0:1]:25", "[IPv6:2001:db8::1]:25", id="ipv6-literal-port"
        ),
        pytest.param(
            "a.example.com;[192.0.2.1]:25", "a.example.com;[192.0.2.1]:25", id="two-entries"
        ),
        pytest.param(
            " a.example.com ; b.example.com:26 ;",
            "a.example.com;b.example.com:26",
            id="blanks-and-trailing-separator",
        ),
        pytest.param("a.example.com, b.example.com", "a.example.com;b.example.com", id="commas"),
        pytest.param("a.example.com b.example.com", "a.example.com;b.example.com", id="blanks"),
        pytest.param("", "", id="empty"),
        pytest.param(" ;; ", "", id="only-separators"),
    ],
)
def test_it_normalises_smart_hosts(typed: str, stored: str) -> None:
    assert normalize_smart_hosts(typed) == stored


def test_it_parses_smart_hosts_into_host_port_and_literal() -> None:
    hosts = parse_smart_hosts("[IPv6:2001:db8::1]:587; Relay.example.com; [192.0.2.1]")
    assert hosts == [
        SmartHost("2001:db8::1", 587, literal=True),
        SmartHost("relay.example.com", None, literal=False),
        SmartHost("192.0.2.1", None, literal=True),
    ]


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("[192.0.2.1", id="missing-closing-bracket"),
        pytest.param("192.0.2.1]", id="missing-opening-bracket"),
        pytest.param("[192.0.2.1]x", id="text-after-bracket"),
        pytest.param("[192.0.2.1]:", id="colon-without-port"),
        pytest.param("[192.0.2.1]:0", id="literal-port-0"),
        pytest.param("relay.example.com:0", id="port-0"),
        pytest.param("relay.example.com:65536", id="port-65536"),
        pytest.param("relay.example.com:abc", id="port-abc"),
        pytest.param("relay.example.com:", id="empty-port"),
        pytest.param("relay.example.com:-1", id="negative-port"),
        pytest.param("relay.example.com:+25", id="signed-port"),
        pytest.param("relay.example.com:²", id="superscript-digit-port"),
        pytest.param("relay.example.com:٢٥", id="arabic-indic-digit-port"),
        pytest.param("relay.example.com:25:26", id="two-ports"),
        pytest.param(":25", id="port-without-host"),
        pytest.param("2001:db8::1", id="bare-ipv6"),
        pytest.param("[2001:db8::1]", id="ipv6-without-tag"),
        pytest.param("[IPv6:192.0.2.1]", id="ipv4-with-ipv6-tag"),
        pytest.param("[IPv6:2001:db8::1", id="ipv6-missing-bracket"),
        pytest.param("[IPv6:not-an-address]", id="ipv6-garbage"),
        pytest.param("192.0.2.1", id="unbracketed-ipv4"),
        pytest.param("192.0.2.1:25", id="unbracketed-ipv4-with-port"),
        pytest.param("[999.0.2.1]", id="ipv4-out-of-range"),
        pytest.param("[]", id="empty-brackets"),
        pytest.param("*.example.com", id="wildcard"),
        pytest.param("*", id="star"),
        pytest.param("mail..example.com", id="empty-label"),
        pytest.param("a.example.com;-bad.example.com", id="one-bad-entry-among-good"),
    ],
)
def test_it_refuses_a_malformed_smart_host(typed: str) -> None:
    with pytest.raises(ValidationError):
        parse_smart_hosts(typed)


def test_it_tells_to_bracket_an_ip_address() -> None:
    with pytest.raises(ValidationError, match=r"\[192\.0\.2\.1\]"):
        parse_smart_hosts("192.0.2.1")


def test_it_tells_how_to_write_an_ipv6_smart_host() -> None:
    with pytest.raises(ValidationError, match=r"IPv6:"):
        parse_smart_hosts("2001:db8::1")


# --- connection and relay list entries --------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        pytest.param("192.0.2.1", ("ip", "192.0.2.1"), id="ipv4"),
        pytest.param(" 192.0.2.1 ", ("ip", "192.0.2.1"), id="ipv4-blanks"),
        pytest.param("2001:DB8:0::1", ("ip", "2001:db8::1"), id="ipv6-compressed"),
        pytest.param("192.0.2.0/24", ("network", "192.0.2.0/24"), id="ipv4-cidr"),
        pytest.param("192.0.2.77/24", ("network", "192.0.2.0/24"), id="cidr-with-host-bits"),
        pytest.param(
            "192.0.2.0/255.255.255.0", ("network", "192.0.2.0/24"), id="subnet-with-netmask"
        ),
        pytest.param("192.0.2.1/32", ("ip", "192.0.2.1"), id="slash-32-is-an-ip"),
        pytest.param("2001:db8::/32", ("network", "2001:db8::/32"), id="ipv6-cidr"),
        pytest.param("2001:db8::1/128", ("ip", "2001:db8::1"), id="slash-128-is-an-ip"),
        pytest.param("mail.Example.com", ("domain", "mail.example.com"), id="domain"),
        pytest.param(".example.com", ("domain", "example.com"), id="leading-dot-domain"),
        pytest.param("*.example.com", ("domain", "*.example.com"), id="wildcard-domain"),
        pytest.param("Bücher.de", ("domain", "xn--bcher-kva.de"), id="idna-domain"),
    ],
)
def test_it_parses_a_host_list_entry(typed: str, parsed: tuple[str, str]) -> None:
    assert parse_host_entry(typed) == parsed


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param("192.0.2.0/33", id="prefix-too-long"),
        pytest.param("2001:db8::/129", id="ipv6-prefix-too-long"),
        pytest.param("192.0.2.0/", id="no-prefix"),
        pytest.param("example.com/24", id="domain-with-prefix"),
        pytest.param("192.0.2", id="three-octets"),
        pytest.param("999.0.2.1", id="octet-out-of-range"),
        pytest.param("192.0.2.256", id="last-octet-out-of-range"),
        pytest.param("192.0.2.1.5", id="five-octets"),
        pytest.param("192.0.2.1:25", id="with-port"),
        pytest.param("192.0.2.1-192.0.2.9", id="range"),
        pytest.param("not a host", id="words"),
        pytest.param("bad_host.example.com", id="underscore"),
        pytest.param("*", id="star-matches-every-client"),
        pytest.param(".*", id="dot-star-matches-every-client"),
    ],
)
def test_it_refuses_a_malformed_host_list_entry(typed: str) -> None:
    with pytest.raises(ValidationError):
        parse_host_entry(typed)


def test_it_refuses_a_domain_where_only_addresses_are_allowed() -> None:
    with pytest.raises(ValidationError):
        parse_host_entry("mail.example.com", allow_domain=False)
    assert parse_host_entry("192.0.2.0/24", allow_domain=False) == ("network", "192.0.2.0/24")


def test_a_host_list_is_normalised_with_duplicates_removed_in_order() -> None:
    typed = [
        "192.0.2.1",
        "192.0.2.1/32",
        "192.0.2.9/24",
        "192.0.2.0/24",
        "Example.com",
        "example.com.",
        "2001:DB8::1",
    ]
    assert normalize_host_list(typed) == ["192.0.2.1", "192.0.2.0/24", "example.com", "2001:db8::1"]


def test_an_empty_host_list_is_fine() -> None:
    assert normalize_host_list([]) == []


def test_a_host_list_reports_every_bad_entry() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_host_list(["bad!", "192.0.2.1", "999.0.2.1"])
    assert len(caught.value.messages) == 2


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("192.0.2.1", id="a-string"),
        pytest.param(None, id="none"),
        pytest.param({"192.0.2.1": True}, id="a-dict"),
        pytest.param([1], id="a-number-inside"),
        pytest.param([None], id="none-inside"),
    ],
)
def test_a_host_list_must_be_a_list_of_text(value: object) -> None:
    with pytest.raises(ValidationError):
        normalize_host_list(value)


def test_a_host_list_without_domains_refuses_a_domain() -> None:
    with pytest.raises(ValidationError):
        normalize_host_list(["192.0.2.1", "mail.example.com"], allow_domain=False)


@pytest.mark.parametrize(
    ("entries", "address", "reverse_name", "matches"),
    [
        pytest.param(["192.0.2.1"], "192.0.2.1", None, True, id="same-ip"),
        pytest.param(["192.0.2.1"], "192.0.2.2", None, False, id="other-ip"),
        pytest.param(["192.0.2.0/24"], "192.0.2.200", None, True, id="inside-subnet"),
        pytest.param(["192.0.2.0/24"], "198.51.100.1", None, False, id="outside-subnet"),
        pytest.param(["2001:db8::/32"], "2001:db8::25", None, True, id="inside-ipv6-subnet"),
        pytest.param(["example.com"], "192.0.2.1", "mx.Example.com.", True, id="reverse-sub"),
        pytest.param(["example.com"], "192.0.2.1", "example.com", True, id="reverse-exact"),
        pytest.param(["example.com"], "192.0.2.1", "badexample.com", False, id="reverse-lookalike"),
        pytest.param(["example.com"], "192.0.2.1", None, False, id="no-reverse-name"),
        pytest.param(["*.example.com"], "192.0.2.1", "example.com", False, id="wildcard-parent"),
        pytest.param([], "192.0.2.1", "example.com", False, id="empty-list"),
    ],
)
def test_a_client_matches_a_host_list_when_it_should(
    entries: list[str], address: str, reverse_name: str | None, matches: bool
) -> None:
    assert host_list_matches(entries, address, reverse_name) is matches


# --- plain IP lists ---------------------------------------------------------------------------


def test_an_ip_list_is_normalised() -> None:
    assert normalize_ip_list(["192.0.2.53", " 2001:DB8:0::53 "]) == ["192.0.2.53", "2001:db8::53"]
    assert normalize_ip_list([]) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["dns.example.com"], id="a-name"),
        pytest.param(["192.0.2.0/24"], id="a-subnet"),
        pytest.param(["999.0.2.53"], id="out-of-range"),
        pytest.param(["192.0.2.53", ""], id="an-empty-entry"),
        pytest.param("192.0.2.53", id="a-string"),
        pytest.param(None, id="none"),
    ],
)
def test_an_ip_list_refuses_what_is_not_an_ip_address(value: object) -> None:
    with pytest.raises(ValidationError):
        normalize_ip_list(value)


# --- schedules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid",
    [
        pytest.param("1" * SCHEDULE_SLOTS, id="always"),
        pytest.param("0" * SCHEDULE_SLOTS, id="never"),
        pytest.param(("0" * 32 + "1" * 4 + "0" * 60) * 7, id="08:00-09:00-daily"),
    ],
)
def test_a_well_formed_schedule_grid_is_accepted(grid: str) -> None:
    assert SCHEDULE_SLOTS == 7 * 96
    validate_schedule_grid(grid)


@pytest.mark.parametrize(
    "grid",
    [
        pytest.param("", id="empty"),
        pytest.param("1" * (SCHEDULE_SLOTS - 1), id="one-slot-short"),
        pytest.param("1" * (SCHEDULE_SLOTS + 1), id="one-slot-long"),
        pytest.param("1" * 7 * 24, id="hourly-resolution"),
        pytest.param("2" + "1" * (SCHEDULE_SLOTS - 1), id="a-two"),
        pytest.param("1" * (SCHEDULE_SLOTS - 1) + "x", id="a-letter"),
        pytest.param(" " * SCHEDULE_SLOTS, id="blanks"),
    ],
)
def test_a_malformed_schedule_grid_is_refused(grid: str) -> None:
    with pytest.raises(ValidationError):
        validate_schedule_grid(grid)
