"""The pure parts of `make bench` (bench/run.py and its modules): /proc parsing and CPU
accounting, the private Postfix's configuration, smtp-sink's counter, the Procfile commands,
the clients' messages, and the report (table, JSON, chart). Nothing here is timed and nothing
needs Postfix installed; the checks that do use a Postfix binary skip without it."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import clients, procstat
from bench.postfix import PostfixLayout, main_cf, master_cf, write_config
from bench.relay_processes import (
    PROCFILE,
    RelaySetup,
    procfile_commands,
    relay_command,
    runnable,
)
from bench.report import (
    RunRecord,
    Sample,
    Summary,
    chart_series,
    cpu_table,
    percentile,
    summarize,
    table,
    write_chart,
    write_results,
)
from bench.run import (
    config_scale_missing,
    cpu_per_message,
    load_for,
    measured_cpu,
    parse_args,
    rest_cpu,
    run_notes,
    send_metrics,
    smtp_source_command,
)
from bench.services import last_message_count
from tests.sinks import SinkFactory

# --- /proc ------------------------------------------------------------------------------------


def stat_line(pid: int, comm: str, ppid: int, ticks: tuple[int, int, int, int], rss: int) -> str:
    """A /proc/PID/stat line: fields 3.. are state, ppid, ..., utime stime cutime cstime
    (14-17), ..., rss (24)."""
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(t) for t in ticks] + ["0"] * 6 + [str(rss)]
    fields += ["0"] * 20
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_a_stat_line_is_read_after_the_last_parenthesis_of_the_command_name() -> None:
    stat = procstat.parse_stat(stat_line(42, "we(ird) name)", 7, (10, 5, 3, 2), 100))

    assert (stat.pid, stat.ppid, stat.ticks) == (42, 7, 20)
    assert stat.rss_bytes == 100 * procstat.PAGE_SIZE


def snap(*stats: procstat.ProcStat) -> dict[int, procstat.ProcStat]:
    return {s.pid: s for s in stats}


def proc(pid: int, ppid: int, ticks: int, rss: int = 0) -> procstat.ProcStat:
    return procstat.ProcStat(pid=pid, ppid=ppid, ticks=ticks, rss_bytes=rss)


def test_a_tree_is_the_root_and_its_descendants_only() -> None:
    s = snap(proc(1, 0, 0), proc(10, 1, 5), proc(11, 10, 5), proc(12, 11, 5), proc(20, 1, 9))

    assert procstat.tree(s, 10) == [10, 11, 12]
    assert procstat.tree(s, 99) == []
    assert procstat.tree_ticks(s, [10]) == 15


def test_cpu_of_a_child_that_exits_between_snapshots_is_counted_once() -> None:
    """Before: the child has used 30 ticks itself. After: it has exited, used 10 more, and
    was reaped: its 40 are in the parent's cutime. The tree used 10 (child) + 5 (parent)."""
    before = snap(proc(100, 1, 50), proc(101, 100, 30))
    after = snap(proc(100, 1, 50 + 5 + 40))

    assert procstat.cpu_seconds(before, after, [100]) == pytest.approx(15 / procstat.CLOCK_TICKS)


def test_a_child_born_and_still_alive_counts_all_its_cpu() -> None:
    before = snap(proc(100, 1, 50))
    after = snap(proc(100, 1, 50), proc(102, 100, 7))

    assert procstat.cpu_seconds(before, after, [100]) == pytest.approx(7 / procstat.CLOCK_TICKS)


def test_cpu_per_message_by_role_and_in_total_and_the_sink_apart() -> None:
    tick = procstat.CLOCK_TICKS
    before = snap(proc(1, 0, 0), proc(2, 0, 0), proc(3, 0, 0))
    after = snap(proc(1, 0, tick), proc(2, 0, 3 * tick), proc(3, 0, tick))

    figures = measured_cpu(before, after, {"relay": [1], "worker": [2]}, 3, messages=100)

    assert figures["cpu_ms_relay"] == pytest.approx(10.0)
    assert figures["cpu_ms_worker"] == pytest.approx(30.0)
    assert figures["cpu_ms"] == pytest.approx(40.0)
    assert figures["sink_cpu_ms"] == pytest.approx(10.0)
    # The sink as the system itself (the direct ceiling) is its total.
    assert cpu_per_message(before, after, {"sink": [3]}, 100)["cpu_ms"] == pytest.approx(10.0)


def test_cpu_at_rest_is_a_percentage_of_one_core_by_role_and_in_all() -> None:
    tick = procstat.CLOCK_TICKS
    before = snap(proc(1, 0, 0), proc(2, 0, 0))
    after = snap(proc(1, 0, tick), proc(2, 0, tick // 2))

    figures = rest_cpu(before, after, {"relay": [1], "beat": [2]}, wall=10.0)

    assert figures["rest_cpu_pct_relay"] == pytest.approx(10.0)
    assert figures["rest_cpu_pct_beat"] == pytest.approx(5.0)
    assert figures["rest_cpu_pct"] == pytest.approx(15.0)


def test_a_snapshot_of_this_machine_holds_this_process_with_its_parent() -> None:
    s = procstat.snapshot()

    assert s[os.getpid()].ppid == os.getppid()
    assert s[os.getpid()].rss_bytes > 0


# --- the private Postfix ----------------------------------------------------------------------


def layout(tmp_path: Path) -> PostfixLayout:
    return PostfixLayout(folder=tmp_path / "pf", port=40025, sink_port=40026)


def settings(text: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    return {key: value for key, value in pairs}


def test_postfix_is_a_pure_relay_on_loopback_to_the_sink(tmp_path: Path) -> None:
    config = settings(main_cf(layout(tmp_path)))

    assert config["relayhost"] == "[127.0.0.1]:40026"
    assert config["inet_interfaces"] == "127.0.0.1"
    assert config["mynetworks"] == "127.0.0.0/8"
    assert config["mydestination"] == ""  # no local delivery
    assert config["local_transport"].startswith("error:")
    assert config["queue_directory"] == str(tmp_path / "pf" / "queue")
    assert config["data_directory"] == str(tmp_path / "pf" / "data")
    assert config["maillog_file"].startswith(config["maillog_file_prefixes"])


def test_postfix_listens_on_its_own_port_only_and_runs_no_local_delivery(tmp_path: Path) -> None:
    rows = [line.split() for line in master_cf(layout(tmp_path)).splitlines()]
    listeners = [row for row in rows if row[1] == "inet"]
    services = {row[0] for row in rows}

    assert listeners == [["127.0.0.1:40025", "inet", "n", "-", "n", "-", "-", "smtpd"]]
    assert {"qmgr", "cleanup", "smtp", "rewrite", "bounce", "postlog"} <= services
    assert "local" not in services
    assert all(len(row) == 8 for row in rows)


def test_the_config_writer_makes_the_folders_postfix_needs(tmp_path: Path) -> None:
    where = layout(tmp_path)
    where.folder.mkdir()

    write_config(where)

    assert settings((where.config / "main.cf").read_text())["relayhost"] == "[127.0.0.1]:40026"
    assert (where.config / "master.cf").read_text() == master_cf(where)
    assert where.queue.is_dir() and where.data.is_dir()


def test_postfix_reads_the_written_configuration(tmp_path: Path) -> None:
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    if not Path(postconf).exists():
        pytest.skip("postconf is not installed (apt-get install postfix)")
    where = layout(tmp_path)
    where.folder.mkdir()
    write_config(where)

    result = subprocess.run(
        [postconf, "-c", str(where.config), "-h", "relayhost", "mynetworks", "mydestination"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[127.0.0.1]:40026", "127.0.0.0/8", ""]
    assert "warning" not in result.stderr, result.stderr


# --- smtp-sink's counter, smtp-source's command ----------------------------------------------


def test_the_sink_counter_is_the_last_complete_record() -> None:
    assert last_message_count(b"") is None
    assert last_message_count(b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r") == 1
    assert last_message_count(b"sess=9 quit=9 mesg=17\rsess=10 quit=9 mesg=18\r") == 18


def test_smtp_source_sends_a_new_connection_per_message_with_one_recipient() -> None:
    command = smtp_source_command(2600, 10, 500)

    assert command[0].endswith("smtp-source")
    assert command[command.index("-s") + 1] == "10"
    assert command[command.index("-m") + 1] == "500"
    assert command[command.index("-l") + 1] == "4096"
    assert "-d" not in command and "-r" not in command  # -d would reuse the connection
    assert command[-1] == "127.0.0.1:2600"


# --- the project's processes ------------------------------------------------------------------


def test_the_procfile_commands_run_with_this_interpreter() -> None:
    procfile = procfile_commands("# comment\nweb: python manage.py x\nworker: celery -A a worker\n")

    assert runnable(procfile["web"], "/v/python") == ["/v/python", "manage.py", "x"]
    assert runnable(procfile["worker"], "/v/python") == [
        "/v/python",
        "-m",
        "celery",
        "-A",
        "a",
        "worker",
    ]


def test_the_relay_runs_as_the_procfile_says_for_its_own_server() -> None:
    procfile = procfile_commands(PROCFILE.read_text())

    command = relay_command(procfile, "/v/python", "bench-embedded")

    assert command[:3] == ["/v/python", "manage.py", "runrelay"]
    assert command[-2:] == ["--server", "bench-embedded"]
    assert {"worker", "beat"} <= set(procfile)


def test_a_setup_never_inherits_the_callers_database_broker_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/someone_elses")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SMTPADMIN_VAR_DIR", "/somewhere/else")

    env = RelaySetup("embedded", tmp_path / "embedded", sink_port=2600).environment()

    assert "DATABASE_URL" not in env and "CELERY_BROKER_URL" not in env
    assert env["SMTPADMIN_VAR_DIR"] == str(tmp_path / "embedded" / "var")
    host, _, port = env["SMTPADMIN_DNS_SERVERS"].partition(":")
    assert host == "127.0.0.1" and port.isdigit()  # nothing is resolved off the machine


# --- the clients ------------------------------------------------------------------------------


def test_a_bench_message_is_dot_safe_crlf_and_of_the_body_size() -> None:
    data = clients.message(3, ["a@x.test"])
    head, _, body = data.partition(b"\r\n\r\n")

    assert head.startswith(b"From: <") and b"\r\nSubject: bench 3\r\n" in head
    assert data.endswith(b"\r\n.\r\n")
    assert len(body) == clients.BODY_BYTES + len(b".\r\n")
    assert b"\n." not in body[:-3] and b"\r\n\r\n" not in body
    assert all(line.endswith(b"\r") for line in data.split(b"\n")[:-1])


def test_recipients_are_spread_over_the_domains_in_turn() -> None:
    addresses = clients.recipients(7, 100, 10)

    assert len(set(addresses)) == 100
    domains = [address.split("@")[1] for address in addresses]
    assert {domains.count(d) for d in set(domains)} == {10}


def test_the_client_sends_and_authenticates_over_smtp(sink: SinkFactory) -> None:
    mx = sink(auth=("bench", "secret"))
    args = clients.parse_args(
        [
            "send",
            "--port",
            str(mx.port),
            "--clients",
            "2",
            "--messages",
            "3",
            "--recipients",
            "4",
            "--domains",
            "2",
            "--auth",
            "bench:secret",
        ]
    )

    result = asyncio.run(clients.send(args))

    assert result.failed == 0, result.failures
    assert len(result.latencies) == len(result.sessions) == 3
    assert sorted(len(m.rcpt_tos) for m in mx.messages) == [4, 4, 4]
    assert {m.auth_user for m in mx.messages} == {"bench"}


def test_the_client_counts_refusals_as_failures(sink: SinkFactory) -> None:
    mx = sink()
    mx.rcpt = lambda address: "550 5.1.1 No such user"
    args = clients.parse_args(["send", "--port", str(mx.port), "--messages", "2"])

    result = asyncio.run(clients.send(args))

    assert result.failed == 2 and result.latencies == []
    assert "RCPT" in result.failures[0]


def test_send_metrics_are_rates_and_percentiles_in_milliseconds() -> None:
    metrics = send_metrics(
        {
            "wall": 2.0,
            "latencies": [0.001, 0.002, 0.003, 0.004],
            "sessions": [0.01] * 4,
            "failed": 0,
            "failures": [],
        }
    )

    assert metrics["rate"] == 2.0
    assert metrics["p50_ms"] == pytest.approx(2.0)
    assert metrics["p99_ms"] == pytest.approx(4.0)
    assert metrics["session_p50_ms"] == pytest.approx(10.0)


# --- options ----------------------------------------------------------------------------------


def test_quick_mode_and_repetitions_come_from_the_command_line_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    monkeypatch.delenv("BENCH_REPS", raising=False)
    assert parse_args([]).quick is False
    assert parse_args(["--quick", "--reps", "2"]).reps == 2
    monkeypatch.setenv("BENCH_QUICK", "1")
    assert parse_args([]).quick is True
    with pytest.raises(SystemExit):
        parse_args(["--systems", "postfix,exim"])


# --- the report -------------------------------------------------------------------------------


def samples() -> list[Sample]:
    result = []
    for rep, (postfix, relay) in enumerate([(100.0, 20.0), (120.0, 30.0), (80.0, 10.0)], 1):
        result.append(
            Sample(
                "throughput", "postfix", rep, 10, {"accept_rate": postfix, "cpu_ms_postfix": 1.0}
            )
        )
        result.append(
            Sample(
                "throughput",
                "relay-postgres",
                rep,
                10,
                {"accept_rate": relay, "cpu_ms_relay": 12.0, "cpu_ms_worker": 4.0},
            )
        )
    result.append(Sample("throughput", "relay-postgres", 1, 50, {"accept_rate": math.nan}))
    return result


def test_the_summary_is_the_median_with_min_max_and_the_ratio_to_postfix() -> None:
    summary = {(s.system, s.metric): s for s in summarize(samples()) if s.clients == 10}

    relay = summary[("relay-postgres", "accept_rate")]
    assert (relay.median, relay.low, relay.high, relay.count) == (20.0, 10.0, 30.0, 3)
    assert relay.ratio == pytest.approx(20.0 / 100.0)
    assert summary[("postfix", "accept_rate")].ratio is None
    # A figure that could not be measured (nan) is left out, not averaged in.
    assert not [s for s in summarize(samples()) if s.clients == 50]


def test_the_table_shows_medians_ranges_and_ratios_and_the_cpu_by_process() -> None:
    summaries = summarize(samples())

    text = table(summaries, {"accept_rate": "msg/s"}, ["postfix", "relay-postgres"])
    cpu = cpu_table(summaries, ["postfix", "relay-postgres"])

    line = next(row for row in text.splitlines() if "relay-postgres" in row)
    assert "accept_rate (msg/s)" in line and "20.0" in line and "[10.0 - 30.0]" in line
    assert line.rstrip().endswith("0.20")
    assert "cpu_ms_relay" not in text
    assert cpu.splitlines()[1].split() == ["clients", "system", "postfix", "relay", "worker"]
    assert cpu.splitlines()[3].split() == ["10", "relay-postgres", "12.0", "4.00"]
    rest = summarize([Sample("rest", "postfix", 1, 0, {"rest_cpu_pct_postfix": 0.5})])
    assert cpu_table(rest, [], "rest", "rest_cpu_pct_", "At rest").splitlines()[2].split() == [
        "postfix",
        "0.50",
    ]


def test_the_results_are_a_timestamped_json_and_latest(tmp_path: Path) -> None:
    record = RunRecord(
        "2026-01-01T00:00:00",
        "2026-01-01T00:10:00",
        {"reps": 3},
        {"cores": 2},
        {"postfix": {"version": "3.7"}},
        samples(),
    )
    summaries = summarize(samples())

    stamped, latest = write_results(tmp_path / "results", "20260101T000000Z", record, summaries)

    assert stamped.name == "20260101T000000Z.json"
    assert stamped.read_text() == latest.read_text()
    data = json.loads(latest.read_text())
    assert len(data["samples"]) == len(samples())
    assert {"median", "low", "high", "ratio"} <= set(data["summary"][0])


def test_the_chart_is_rate_against_clients_for_each_system(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    summaries = summarize(samples())
    summaries.append(Summary("throughput", 1, "postfix", "accept_rate", 50.0, 40.0, 60.0, 3))

    assert chart_series(summaries, "throughput", "accept_rate")["postfix"] == [
        (1, 50.0, 40.0, 60.0),
        (10, 100.0, 80.0, 120.0),
    ]
    path = write_chart(tmp_path / "chart.png", summaries, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 99) == 2.0
    assert math.isnan(percentile([], 50))


def test_the_big_configuration_runs_only_with_the_bulk_filler(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    assert "config_scale.py" in config_scale_missing(tmp_path)

    (tmp_path / "bench" / "config_scale.py").write_text("def fill(*args): pass\n")
    assert config_scale_missing(tmp_path) == ""


def test_the_full_load_is_the_big_configuration_and_three_repetitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    monkeypatch.delenv("BENCH_REPS", raising=False)
    full = load_for(parse_args([]))
    quick = load_for(parse_args(["--quick"]))

    assert full.reps == 3 and quick.reps == 1
    assert full.config == (10_000, 100_000, 1_000)
    assert load_for(parse_args(["--reps", "5"])).reps == 5
    assert sorted(full.throughput) == sorted(quick.throughput) == [1, 10, 50]


def test_the_notes_say_how_the_relay_ran_what_was_skipped_and_what_failed() -> None:
    notes = run_notes(
        [
            Sample(
                "throughput", "relay-postgres", 2, 10, {"accept_rate": 1.0}, "only 5/10 arrived"
            ),
            Sample("latency", "postfix", 1, 10, {"rate": 1.0}),
        ],
        {"config": "bench/config_scale.py (the bulk filler) is not in this tree"},
        {
            "relay-postgres": {"relay_processes": ["runrelay", "runrelay --intake-of 1"]},
            "direct": {},
        },
    )

    assert notes == [
        "relay-postgres: the relay ran as 2 process(es): ['runrelay', 'runrelay --intake-of 1']",
        "skipped config: bench/config_scale.py (the bulk filler) is not in this tree",
        "note: rep 2 throughput relay-postgres clients=10: only 5/10 arrived",
    ]
