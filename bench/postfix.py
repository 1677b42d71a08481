"""A reference Postfix as a pure relay in a private folder: its own main.cf and master.cf
(``postfix -c DIR``), its own queue and data directories, listening on one loopback port and
relaying everything from 127.0.0.0/8 to the sink; no local delivery, no DNS. Started and
stopped by the bench only; the system's Postfix instance (if any) is never touched."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"
SHLIB_DIRECTORY = "/usr/lib/postfix"
META_DIRECTORY = "/etc/postfix"  # postfix-files: what `postfix check` creates in the queue


@dataclass(frozen=True)
class PostfixLayout:
    """Where the private instance lives and what it relays."""

    folder: Path  # the instance's own folder: config/, queue/, data/, maillog
    port: int  # its SMTP listener on 127.0.0.1
    sink_port: int  # relayhost = [127.0.0.1]:sink_port

    @property
    def config(self) -> Path:
        return self.folder / "config"

    @property
    def queue(self) -> Path:
        return self.folder / "queue"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def maillog(self) -> Path:
        return self.folder / "maillog"


def main_cf(layout: PostfixLayout) -> str:
    """main.cf of a relay that accepts from loopback and hands everything to the sink."""
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(layout.queue),
        "data_directory": str(layout.data),
        "command_directory": "/usr/sbin",
        "daemon_directory": DAEMON_DIRECTORY,
        "shlib_directory": SHLIB_DIRECTORY,
        "meta_directory": META_DIRECTORY,
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "postfix.bench.test",
        "mydomain": "bench.test",
        "myorigin": "$myhostname",
        # A pure relay: no domain is local, nothing is delivered on this machine.
        "mydestination": "",
        "local_recipient_maps": "",
        "local_transport": "error:5.1.1 no local delivery",
        "alias_maps": "",
        "alias_database": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "relayhost": f"[127.0.0.1]:{layout.sink_port}",
        # Nothing leaves the machine and nothing waits for a resolver.
        "smtp_dns_support_level": "disabled",
        "smtpd_peername_lookup": "no",
        "biff": "no",
        "smtputf8_enable": "no",
        "maillog_file": str(layout.maillog),
        "maillog_file_prefixes": str(layout.folder),
        "master_service_disable": "",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


# name, type, private, unpriv, chroot, wakeup, maxproc, command (master.cf columns)
MASTER_SERVICES: tuple[tuple[str, ...], ...] = (
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
)


def master_cf(layout: PostfixLayout) -> str:
    """master.cf: one smtpd on the loopback port, the queue services, no chroot."""
    rows: list[tuple[str, ...]] = [
        (f"127.0.0.1:{layout.port}", "inet", "n", "-", "n", "-", "-", "smtpd")
    ]
    rows.extend(MASTER_SERVICES)
    return "".join(" ".join(row) + "\n" for row in rows)


def write_config(layout: PostfixLayout) -> None:
    layout.config.mkdir(parents=True, exist_ok=True)
    (layout.config / "main.cf").write_text(main_cf(layout))
    (layout.config / "master.cf").write_text(master_cf(layout))
    # The queue belongs to root (postfix check creates its subdirectories for the postfix
    # user), the data directory to the postfix user; both must be reachable by it.
    layout.queue.mkdir(exist_ok=True)
    layout.data.mkdir(exist_ok=True)
    for folder in (layout.folder, layout.config, layout.queue):
        folder.chmod(0o755)
    if os.geteuid() == 0 and postfix_user_exists():
        shutil.chown(layout.data, "postfix", "postfix")


def postfix_user_exists() -> bool:
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return True


def available() -> str:
    """Why the reference Postfix cannot run here ("" when it can)."""
    if not Path(POSTFIX).exists():
        return f"no {POSTFIX} (apt-get install postfix)"
    if os.geteuid() != 0:
        return "Postfix is started as root (its master switches to the postfix user)"
    return ""


class PrivatePostfix:
    def __init__(self, layout: PostfixLayout) -> None:
        self.layout = layout

    def _postfix(self, *arguments: str) -> None:
        result = subprocess.run(
            [POSTFIX, "-c", str(self.layout.config), *arguments],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"postfix {' '.join(arguments)} failed: {result.stdout}\n{result.stderr}\n"
                + self.log()
            )

    def start(self) -> PrivatePostfix:
        write_config(self.layout)
        self._postfix("check")
        self._postfix("start")
        return self

    def master_pid(self) -> int:
        """The master's pid, from its pid file in the private queue."""
        path = self.layout.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while True:
            try:
                return int(path.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the private Postfix master wrote no pid file") from None
                time.sleep(0.05)

    def stop(self) -> None:
        try:
            self._postfix("stop")
        except RuntimeError:
            pid = self.master_pid()
            os.kill(pid, 9)

    def log(self) -> str:
        try:
            return self.layout.maillog.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def destroy(self) -> None:
        shutil.rmtree(self.layout.folder, ignore_errors=True)
