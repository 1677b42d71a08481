"""Message data (after 354) read in blocks instead of line by line.

``read_block`` takes from the stream what may be message data without ever reading past the
end of data, so pipelined commands after the lone dot stay in the reader; ``DataScanner``
takes those blocks and decides, for whole blocks at once where nothing needs a closer look,
what a line-by-line reader would decide line by line (``relay.smtp.policy``):

* lines are split at CRLF; the data ends at the first line that is a lone dot (right after
  354 too), and a leading dot of the other lines is removed (RFC 5321 4.5.2);
* a bare CR or LF in any line ends the session (SMTP smuggling), however long the line;
* otherwise the first line with a NUL, longer than 998 octets, or taking the message or the
  session past its size limit refuses the message, which is still read to its end.

Memory stays bounded by the size limits: a refused message is not kept, and of a line too
long to accept only what its refusal needs is.
"""

from __future__ import annotations

import asyncio

from relay.smtp import policy
from relay.smtp.config import ListenerConfig
from relay.smtp.policy import DataOutcome

END = b"\r\n.\r\n"
CRLF = b"\r\n"
# The longest unfinished line kept whole: a transparency dot, 998 octets and the CR of its CRLF.
# Any longer is refused whatever follows, and only its last octet and what it contains are kept.
KEEP = policy.MAX_TEXT_LINE + 2


async def read_block(reader: asyncio.StreamReader, scanner: DataScanner) -> bytes:
    """The next bytes of message data for ``scanner``: up to and including the end of data
    when the reader has it, never beyond. At the end of input, what came before it, with
    ``IncompleteReadError`` raised once the scanner has taken that and still wants more."""
    wanted = scanner.wanted()
    try:
        if wanted:
            # The data so far ends with the start of the end of data: these octets finish it.
            return await reader.readexactly(wanted)
        try:
            return await reader.readuntil(END)
        except asyncio.LimitOverrunError as overrun:
            # No end of data starts in the first ``consumed`` octets of the buffer.
            return await reader.read(overrun.consumed)
    except asyncio.IncompleteReadError as end_of_input:
        scanner.feed(end_of_input.partial)
        if not scanner.done:
            raise
        return b""


class DataScanner:
    """The state of one message's data between blocks. Feed blocks until ``done``; then
    ``outcome`` says what happened and ``content`` is the message (COMPLETE only)."""

    def __init__(self, config: ListenerConfig, session_bytes: int) -> None:
        self.config = config
        self.session_bytes = session_bytes  # accepted earlier in this session
        self.outcome: DataOutcome | None = None
        self.problem: DataOutcome | None = None  # the message is refused; read to its end
        self.size = 0  # octets of the lines so far as sent, while nothing is refused
        self.parts: list[bytes] = []
        self.leftover = b""  # what was fed after the end of data (nothing, from read_block)
        # The unfinished last line: whole while it is short enough to be accepted; of a longer
        # one only its last octet (a CR may start its CRLF) and what the rest contained.
        self.pending = b""
        self.long_line = False
        self.long_bare = False
        self.long_nul = False

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def content(self) -> bytes:
        return b"".join(self.parts) if self.outcome is DataOutcome.COMPLETE else b""

    def wanted(self) -> int:
        """When what was fed ends with the start of an end of data (CRLF . CR, with a CRLF
        before the first line), the octets that could finish it; otherwise 0. Taking exactly
        these cannot pass an end of data: none can end sooner than this one would."""
        pending = self.pending
        if not pending:
            return 3  # at the start of a line: ".\r\n" would end the data
        if not self.long_line:
            if pending == b".":
                return 2
            if pending == b".\r":
                return 1
        return 1 if pending.endswith(b"\r") else 0

    def feed(self, block: bytes) -> None:
        if self.done or not block:
            return
        data = self.pending + block if self.pending else block
        finish = -1
        if not self.long_line and data.startswith(b".\r\n"):  # ``data`` starts a line
            lines_end, finish = 0, 3
        else:
            found = data.find(END)
            if found >= 0:
                lines_end, finish = found + 2, found + 5
            else:
                lines_end = data.rfind(CRLF) + 2 if CRLF in data else 0
        self._lines(data[:lines_end])
        if self.done:
            return
        if finish >= 0:
            self.outcome = self.problem or DataOutcome.COMPLETE
            self.leftover = data[finish:]
            self.pending = b""
            return
        self._keep(data[lines_end:])

    def _keep(self, tail: bytes) -> None:
        """The unfinished last line (no CRLF in it), or what is kept of it when too long."""
        if self.long_line or len(tail) > KEEP:
            dropped = tail[:-1]  # no CRLF in ``tail``: any CR or LF in here is bare
            self.long_line = True
            self.long_bare = self.long_bare or b"\r" in dropped or b"\n" in dropped
            self.long_nul = self.long_nul or b"\x00" in dropped
            tail = tail[-1:]
        self.pending = tail

    def _lines(self, region: bytes) -> None:
        """Whole lines, each ending with CRLF; the first continues a long line if there is one."""
        if not region:
            return
        crlf = region.count(CRLF)
        if (
            region.count(b"\r") != crlf
            or region.count(b"\n") != crlf
            or (self.long_line and self.long_bare)
        ):
            self.outcome = DataOutcome.BARE_LINE_ENDING
            return
        if self.problem is not None:
            self.long_line = self.long_bare = self.long_nul = False
            return
        if not self.long_line and b"\x00" not in region:
            size = self.size + len(region)
            if policy.data_size_outcome(size, self.session_bytes, self.config) is None and (
                len(region) <= policy.MAX_TEXT_LINE + 2
                or max(map(len, region.split(CRLF))) <= policy.MAX_TEXT_LINE
            ):
                self.size = size
                self.parts.append(_unstuffed(region))
                return
        self._line_by_line(region)

    def _line_by_line(self, region: bytes) -> None:
        """A region with a line to refuse: find the first, as the line-by-line reader would."""
        for index, body in enumerate(region.split(CRLF)[:-1]):
            if index == 0 and self.long_line:
                refusal = policy.line_outcome(
                    bare=False, nul=self.long_nul or b"\x00" in body, length=KEEP + len(body)
                )
                unstuffed = body
            else:
                unstuffed = body[1:] if body.startswith(b".") else body
                refusal = policy.data_line_outcome(unstuffed)
            self.size += len(body) + 2
            self.problem = refusal or policy.data_size_outcome(
                self.size, self.session_bytes, self.config
            )
            if self.problem is not None:
                self.parts.clear()
                break
            self.parts.append(unstuffed + CRLF)
        self.long_line = self.long_bare = self.long_nul = False


def _unstuffed(region: bytes) -> bytes:
    """Whole lines without their transparency dots."""
    if region.startswith(b"."):
        region = region[1:]
    return region.replace(b"\r\n.", CRLF) if b"\r\n." in region else region
