"""Connection counts shared by the intake processes of one relay worker, so a virtual server's
connection limits hold for the server as a whole and not once per process.

A table in shared memory (a memfd the parent creates and hands to every child): one row per
intake process, which only that process writes, and in each row one counter per virtual
server and one per (virtual server, client address) hashed into a fixed number of cells. A
count is the sum of its column over the rows. Two processes admitting at the same instant may
both see room for one more, so a limit may be overshot by at most one session per other
process; two clients whose addresses share a cell count together (rarely: many cells).
"""

from __future__ import annotations

import hashlib
import mmap
import os

SERVER_CELLS = 1024  # virtual servers of one server
CLIENT_CELLS = 65536  # (virtual server, client address) pairs
CELL_BYTES = 4
ROW_CELLS = SERVER_CELLS + CLIENT_CELLS


def client_cell(virtual_server_id: int, client: str) -> int:
    """A client's cell: the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"{virtual_server_id} {client}".encode(), digest_size=8).digest()
    return SERVER_CELLS + int.from_bytes(digest, "big") % CLIENT_CELLS


def server_cell(virtual_server_id: int) -> int:
    return virtual_server_id % SERVER_CELLS


def table_size(rows: int) -> int:
    return rows * ROW_CELLS * CELL_BYTES


def create_table(rows: int) -> int | None:
    """A zeroed table for ``rows`` processes; the file descriptor is handed to the children.
    None where the system has no memfd (then each process counts its own sessions)."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("smtpadmin-connection-counts")
    os.ftruncate(fd, table_size(rows))
    return fd


def rows_of(fd: int) -> int:
    """How many rows the table behind ``fd`` has (a child learns it from the file's size)."""
    return os.fstat(fd).st_size // (ROW_CELLS * CELL_BYTES)


class SharedCounts:
    """This process's view of the table: it adds to its own row, reads every row."""

    def __init__(self, fd: int, rows: int, row: int) -> None:
        if not 0 <= row < rows:
            raise ValueError(f"row {row} is not one of {rows}")
        self.rows = rows
        self.row = row
        self.memory = mmap.mmap(fd, table_size(rows))
        self.cells = memoryview(self.memory).cast("i")

    def _column(self, cell: int) -> int:
        return sum(self.cells[row * ROW_CELLS + cell] for row in range(self.rows))

    def _add(self, cell: int, delta: int) -> None:
        self.cells[self.row * ROW_CELLS + cell] += delta

    def sessions(self, virtual_server_id: int) -> int:
        return self._column(server_cell(virtual_server_id))

    def from_client(self, virtual_server_id: int, client: str) -> int:
        return self._column(client_cell(virtual_server_id, client))

    def take(self, virtual_server_id: int, client: str) -> None:
        self._add(server_cell(virtual_server_id), 1)
        self._add(client_cell(virtual_server_id, client), 1)

    def give_back(self, virtual_server_id: int, client: str) -> None:
        self._add(server_cell(virtual_server_id), -1)
        self._add(client_cell(virtual_server_id, client), -1)

    def clear_row(self, row: int) -> None:
        """Forget what a dead process held (the parent, before it starts the next one)."""
        start = row * ROW_CELLS * CELL_BYTES
        self.memory[start : start + ROW_CELLS * CELL_BYTES] = bytes(ROW_CELLS * CELL_BYTES)
