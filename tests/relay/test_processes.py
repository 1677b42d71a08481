"""The decisions of the process supervisor: how many intake processes, when a dead one is
restarted, what a child's pipe says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from relay.smtp.processes import (
    MAX_RESTART_DELAY,
    PipeWriter,
    child_command,
    entry_ids,
    intake_processes,
    restart_delay,
    session_scope,
)
from relay.smtp.shared_counts import SharedCounts, client_cell, create_table, rows_of


@pytest.mark.parametrize(
    ("requested", "configured", "cores", "expected"),
    [
        (None, 0, 2, 2),  # the default: one per core
        (None, 0, 1, 1),
        (None, 3, 2, 3),  # the setting
        (1, 4, 8, 1),  # --processes wins over the setting
        (0, 1, 4, 4),  # --processes 0: one per core
    ],
)
def test_how_many_intake_processes(
    requested: int | None, configured: int, cores: int, expected: int
) -> None:
    assert intake_processes(requested, configured, cores) == expected


def test_a_child_that_keeps_dying_is_restarted_later_and_later() -> None:
    delays = [restart_delay(crashes) for crashes in range(1, 12)]
    assert delays[0] == 0.0  # the first death: at once
    assert delays == sorted(delays)
    assert delays[1] > 0
    assert delays[-1] == MAX_RESTART_DELAY


def test_entry_ids_ignore_what_is_not_an_id() -> None:
    assert entry_ids([b"12", b" 7 ", b"", b"x1", b"-3", b"40"]) == [12, 7, 40]


def test_a_session_scope_ends_with_a_slash() -> None:
    # "node1/12/" must not be a prefix of another process's "node1/123/..." keys.
    assert session_scope("node1", 12) == "node1/12/"
    assert not "node1/123/1".startswith(session_scope("node1", 12))


def test_the_child_command_names_its_parent_and_pipe() -> None:
    command = child_command("node1", interval=0.2, grace=5.0, parent_pid=99, pipe=7)
    assert command[2:5] == ["runrelay", "--server", "node1"]
    assert command[command.index("--intake-of") + 1] == "99"
    assert command[command.index("--intake-pipe") + 1] == "7"
    assert command[command.index("--interval") + 1] == "0.2"


def test_a_pipe_writer_sends_one_id_a_line_and_survives_a_closed_pipe() -> None:
    read_end, write_end = os.pipe()
    writer = PipeWriter(write_end)
    writer([3, 14])
    assert os.read(read_end, 100) == b"3\n14\n"
    os.close(read_end)
    writer([15])  # the parent is gone: no exception, the sweep delivers it later
    assert writer.broken
    os.close(write_end)


def test_shared_counts_add_up_the_rows_of_every_process() -> None:
    fd = create_table(2)
    assert fd is not None
    try:
        first, second = SharedCounts(fd, 2, 0), SharedCounts(fd, rows_of(fd), 1)
        first.take(7, "192.0.2.1")
        second.take(7, "192.0.2.1")
        second.take(7, "192.0.2.2")
        second.take(8, "192.0.2.1")
        assert first.sessions(7) == second.sessions(7) == 3
        assert first.from_client(7, "192.0.2.1") == 2
        assert first.from_client(8, "192.0.2.1") == 1  # per virtual server
        second.give_back(7, "192.0.2.2")
        assert first.sessions(7) == 2
        # A dead process's row is cleared by the parent: what it held is free again.
        first.clear_row(1)
        assert first.sessions(7) == 1 and first.sessions(8) == 0
        assert first.from_client(7, "192.0.2.1") == 1
    finally:
        os.close(fd)


def test_a_client_has_the_same_cell_in_every_process() -> None:
    # hash() of a str differs between processes; the cell must not.
    code = "from relay.smtp.shared_counts import client_cell; print(client_cell(7, '192.0.2.1'))"
    cells = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=True, text=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert cells == {str(client_cell(7, "192.0.2.1"))}
