"""The W3C extended protocol log of a virtual server: the files, the header, the fields, day
rollover (with a clock the test moves), masking of AUTH secrets, and values with spaces."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from relay.smtp.protocol_log import AUTH_RESPONSE, FIELDS, ProtocolLog
from tests.threads import TestThread, finish_all

SECRET_PLAIN = "AGFsaWNlAGNvcnJlY3QgaG9yc2U="  # base64("\0alice\0correct horse")
SECRET_USER = "YWxpY2U="  # base64("alice")
SECRET_PASSWORD = "Y29ycmVjdCBob3JzZQ=="  # base64("correct horse")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 9, 14, 30, 5, tzinfo=UTC))


@pytest.fixture
def protocol_log(tmp_path: Path, clock: Clock) -> Iterator[ProtocolLog]:
    log = ProtocolLog(1, "SMTPSVC1", "RELAY01", tmp_path, clock=clock)
    yield log
    log.close()


def write(log: ProtocolLog, method: str = "EHLO", argument: str = "", **extra: Any) -> None:
    values: dict[str, Any] = {
        "client_ip": "192.0.2.10",
        "username": "client.example.org",
        "server_ip": "198.51.100.1",
        "server_port": 25,
        "method": method,
        "argument": argument,
        "status": 250,
        "bytes_in": 24,
        "bytes_out": 180,
        "time_taken_ms": 3,
    }
    log.write(**(values | extra))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def entries(path: Path) -> list[dict[str, str]]:
    """The log lines of a file as field -> value, checked against the #Fields directive."""
    result, fields = [], None
    for line in lines(path):
        if line.startswith("#Fields: "):
            fields = line.removeprefix("#Fields: ").split(" ")
        elif not line.startswith("#"):
            assert fields is not None, "a log line before any #Fields directive"
            values = line.split(" ")
            assert len(values) == len(fields), line
            result.append(dict(zip(fields, values, strict=True)))
    return result


def test_a_new_file_starts_with_the_w3c_header(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log)

    path = tmp_path / "SMTPSVC1" / "ex250309.log"
    header = lines(path)[:4]
    assert header[0].startswith("#Software: smtpadmin ")
    assert header[1] == "#Version: 1.0"
    assert header[2] == "#Date: 2025-03-09 14:30:05"
    assert header[3] == (
        "#Fields: date time c-ip cs-username s-sitename s-computername s-ip s-port "
        "cs-method cs-uri-query sc-status cs-bytes sc-bytes time-taken"
    )
    assert len(lines(path)) == 5


def test_a_line_holds_every_field_of_the_command(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log, "mail", "FROM:<alice@example.org>", bytes_in=30, bytes_out=14)

    [entry] = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert entry == {
        "date": "2025-03-09",
        "time": "14:30:05",
        "c-ip": "192.0.2.10",
        "cs-username": "client.example.org",
        "s-sitename": "SMTPSVC1",
        "s-computername": "RELAY01",
        "s-ip": "198.51.100.1",
        "s-port": "25",
        "cs-method": "MAIL",
        "cs-uri-query": "FROM:<alice@example.org>",
        "sc-status": "250",
        "cs-bytes": "30",
        "sc-bytes": "14",
        "time-taken": "3",
    }
    assert tuple(entry) == FIELDS


def test_empty_values_are_a_dash(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log, "QUIT", "", username="", status=None)

    [entry] = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert entry["cs-uri-query"] == "-"
    assert entry["cs-username"] == "-"
    assert entry["sc-status"] == "-"


def test_a_status_given_as_text_is_logged_as_is(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log, "DATA", status="354")

    [entry] = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert entry["sc-status"] == "354"


def test_spaces_in_values_become_plus_signs(tmp_path: Path, clock: Clock) -> None:
    with ProtocolLog(3, "Default SMTP Virtual Server", "RELAY 01", tmp_path, clock=clock) as log:
        write(log, "MAIL", "FROM:<alice@example.org> SIZE=1024 BODY=8BITMIME", username="a b")

    [entry] = entries(tmp_path / "SMTPSVC3" / "ex250309.log")
    assert entry["s-sitename"] == "Default+SMTP+Virtual+Server"
    assert entry["s-computername"] == "RELAY+01"
    assert entry["cs-uri-query"] == "FROM:<alice@example.org>+SIZE=1024+BODY=8BITMIME"
    assert entry["cs-username"] == "a+b"


def test_a_client_cannot_forge_log_lines(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log, "HELO", "x\r\n2025-03-09 14:30:05 10.0.0.1 - forged\tline\x00")

    path = tmp_path / "SMTPSVC1" / "ex250309.log"
    [entry] = entries(path)
    assert entry["cs-uri-query"] == "x%0D%0A2025-03-09+14:30:05+10.0.0.1+-+forged%09line%00"
    assert len(lines(path)) == 5


def test_non_ascii_values_are_kept_as_utf8(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    write(protocol_log, "RCPT", "TO:<jörg@bücher.example>")

    [entry] = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert entry["cs-uri-query"] == "TO:<jörg@bücher.example>"


def test_it_logs_the_auth_mechanism_but_never_the_initial_response(
    protocol_log: ProtocolLog, tmp_path: Path
) -> None:
    write(protocol_log, "AUTH", f"PLAIN {SECRET_PLAIN}", status=235)

    path = tmp_path / "SMTPSVC1" / "ex250309.log"
    [entry] = entries(path)
    assert entry["cs-method"] == "AUTH"
    assert entry["cs-uri-query"] == "PLAIN+***"
    assert SECRET_PLAIN not in path.read_text()


def test_it_never_logs_the_answers_to_an_auth_challenge(
    protocol_log: ProtocolLog, tmp_path: Path
) -> None:
    write(protocol_log, "auth", "LOGIN", status=334)
    write(protocol_log, AUTH_RESPONSE, SECRET_USER, status=334)
    write(protocol_log, AUTH_RESPONSE, SECRET_PASSWORD, status=535)
    write(protocol_log, AUTH_RESPONSE, "", status=501)

    path = tmp_path / "SMTPSVC1" / "ex250309.log"
    logged = [(e["cs-method"], e["cs-uri-query"], e["sc-status"]) for e in entries(path)]
    assert logged == [
        ("AUTH", "LOGIN", "334"),
        ("AUTH-RESPONSE", "***", "334"),
        ("AUTH-RESPONSE", "***", "535"),
        ("AUTH-RESPONSE", "-", "501"),
    ]
    assert SECRET_USER not in path.read_text()
    assert SECRET_PASSWORD not in path.read_text()


def test_a_new_day_starts_a_new_file_with_its_own_header(
    protocol_log: ProtocolLog, tmp_path: Path, clock: Clock
) -> None:
    clock.now = datetime(2025, 3, 9, 23, 59, 59, tzinfo=UTC)
    write(protocol_log, "EHLO", "before")
    clock.now += timedelta(seconds=2)
    write(protocol_log, "EHLO", "after")

    before = tmp_path / "SMTPSVC1" / "ex250309.log"
    after = tmp_path / "SMTPSVC1" / "ex250310.log"
    assert [e["cs-uri-query"] for e in entries(before)] == ["before"]
    assert [e["cs-uri-query"] for e in entries(after)] == ["after"]
    assert lines(after)[2] == "#Date: 2025-03-10 00:00:01"
    assert [e["date"] for e in entries(after)] == ["2025-03-10"]


def test_days_and_times_are_utc(protocol_log: ProtocolLog, tmp_path: Path, clock: Clock) -> None:
    # 01:30 on the 10th in UTC+2 is still the 9th in UTC.
    clock.now = datetime(2025, 3, 10, 1, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    write(protocol_log)

    [entry] = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert (entry["date"], entry["time"]) == ("2025-03-09", "23:30:00")
    assert not (tmp_path / "SMTPSVC1" / "ex250310.log").exists()


def test_each_virtual_server_has_its_own_files(tmp_path: Path, clock: Clock) -> None:
    with (
        ProtocolLog(1, "SMTPSVC1", "RELAY01", tmp_path, clock=clock) as first,
        ProtocolLog(2, "SMTPSVC2", "RELAY01", tmp_path, clock=clock) as second,
    ):
        write(first, "HELO", "one")
        write(second, "HELO", "two")
        write(first, "HELO", "three")

    assert [e["cs-uri-query"] for e in entries(tmp_path / "SMTPSVC1" / "ex250309.log")] == [
        "one",
        "three",
    ]
    assert [e["cs-uri-query"] for e in entries(tmp_path / "SMTPSVC2" / "ex250309.log")] == ["two"]


def test_a_restarted_worker_appends_under_a_new_header(tmp_path: Path, clock: Clock) -> None:
    with ProtocolLog(1, "SMTPSVC1", "RELAY01", tmp_path, clock=clock) as log:
        write(log, "HELO", "first")
    clock.now += timedelta(minutes=5)
    with ProtocolLog(1, "SMTPSVC1", "RELAY01", tmp_path, clock=clock) as log:
        write(log, "HELO", "second")

    path = tmp_path / "SMTPSVC1" / "ex250309.log"
    assert [e["cs-uri-query"] for e in entries(path)] == ["first", "second"]
    dates = [line for line in lines(path) if line.startswith("#Date: ")]
    assert dates == ["#Date: 2025-03-09 14:30:05", "#Date: 2025-03-09 14:35:05"]


def test_the_logs_live_under_var_dir_by_default(
    settings: Any, tmp_path: Path, clock: Clock
) -> None:
    settings.VAR_DIR = tmp_path / "var"

    with ProtocolLog(7, "SMTPSVC7", "RELAY01", clock=clock) as log:
        write(log)

    assert (tmp_path / "var" / "logs" / "SMTPSVC7" / "ex250309.log").exists()


def test_lines_from_many_threads_stay_whole(protocol_log: ProtocolLog, tmp_path: Path) -> None:
    def session(number: int) -> None:
        for line in range(200):
            write(protocol_log, "RCPT", f"TO:<user{line}@session{number}.example>")

    threads = [TestThread(session, n) for n in range(8)]
    for thread in threads:
        thread.start()
    finish_all(threads, 60)

    logged = entries(tmp_path / "SMTPSVC1" / "ex250309.log")
    assert len(logged) == 8 * 200
    assert {e["cs-uri-query"] for e in logged} == {
        f"TO:<user{line}@session{n}.example>" for n in range(8) for line in range(200)
    }


def test_a_log_that_cannot_be_written_does_not_disturb_the_session(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the logs folder should be")

    with (
        caplog.at_level(logging.WARNING, logger="relay.protocol_log"),
        ProtocolLog(1, "SMTPSVC1", "RELAY01", blocked, clock=clock) as log,
    ):
        write(log)
        write(log)
        blocked.unlink()  # the administrator mends it: the log carries on
        write(log, "HELO", "mended")

    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1  # reported once, not per line
    assert [e["cs-uri-query"] for e in entries(blocked / "SMTPSVC1" / "ex250309.log")] == ["mended"]
