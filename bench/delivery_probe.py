"""Delivery alone, with more messages than a quick bench run: the relay on a private
PostgreSQL + Redis (as ``bench.run`` sets it up), smtp-source sending M messages with C
clients, the time until the counting sink has them all, the CPU per message of each process
and what the deliver tasks returned (from the worker's log).

    python -m bench.delivery_probe [--messages 400] [--clients 10] [--profile FILE]

``--profile`` records the worker's processes with py-spy (collapsed stacks) while the mail
goes through, when py-spy is installed.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import procstat
from bench.relay_processes import RelaySetup
from bench.run import smtp_source_command
from bench.services import CountingSink, temp_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--profile", type=Path, help="py-spy output (collapsed stacks)")
    args = parser.parse_args(argv)
    folder = temp_folder("smtpadmin-probe-")
    sink = CountingSink().start()
    setup = RelaySetup("postgres", folder, sink.port)
    try:
        setup.prepare()
        setup.start()
        roots = setup.roots()
        spy = None
        if args.profile is not None:
            worker = setup.processes["worker"].process.pid
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            command = [py_spy, "record", "-r", "200", "-f", "raw", "--subprocesses"]
            spy = subprocess.Popen(
                [*command, "-o", str(args.profile), "--pid", str(worker)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        base = sink.settle(quiet=0.5)
        before = procstat.snapshot()
        started = time.perf_counter()
        subprocess.run(
            smtp_source_command(setup.port, args.clients, args.messages),
            check=True,
            capture_output=True,
        )
        accepted = time.perf_counter() - started
        arrived = sink.wait_for(base + args.messages, timeout=max(120.0, args.messages * 0.5))
        delivered = time.perf_counter() - started
        after = procstat.snapshot()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        print(
            f"accepted {args.messages / accepted:.1f} msg/s, end to end "
            f"{args.messages / delivered:.1f} msg/s ({'all' if arrived else 'NOT all'} arrived)"
        )
        for role, pids in roots.items():
            milliseconds = procstat.cpu_seconds(before, after, pids) * 1000 / args.messages
            print(f"{role:10} {milliseconds:6.2f} ms CPU per message")
    finally:
        setup.stop()
        sink.stop()
    log = (folder / "worker.log").read_text(errors="replace")
    results = collections.Counter(re.findall(r"relay\.tasks\.deliver\[.*succeeded.*: '(\w+)'", log))
    print(f"deliver tasks: {dict(results)}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
