"""Files under the var directory that hold secrets or mail are private to the user that runs
smtpadmin (files 0600, folders 0700) whatever the umask, and system check smtpadmin.W002 warns
about any that others can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks

import smtpadmin.celery
import smtpadmin.settings
from relay.delivery.badmail import badmail_directory, write_badmail
from relay.intake import accept
from relay.local import deliver_local
from relay.smtp.protocol_log import ProtocolLog
from tests.relay.test_intake import envelope, make_world

ROOT = Path(django_settings.BASE_DIR)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every path under ``root`` (and ``root``) with its permission bits."""
    found = {".": mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = mode(path)
    return found


def not_private(root: Path) -> dict[str, str]:
    return {name: oct(bits) for name, bits in modes_under(root).items() if bits & 0o077}


def make_folders(path: Path, bits: int) -> Path:
    """``mkdir -p`` with exactly ``bits`` on every folder (this process's umask is private)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir()
        folder.chmod(bits)
    return path


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The umask most systems start processes with: files 0644, folders 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def var_dir(tmp_path: Path, settings: Any) -> Path:
    """A var directory that does not exist yet, where the code under test will make it."""
    settings.VAR_DIR = tmp_path / "state" / "var"
    settings.STATIC_ROOT = settings.VAR_DIR / "staticfiles"
    return Path(settings.VAR_DIR)


def w002() -> list[Any]:
    return [m for m in run_checks() if m.id == "smtpadmin.W002"]


# --- created private, through the code that makes them --------------------------------------


def test_a_generated_secret_key_and_the_var_directory_made_for_it_are_private(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None
) -> None:
    monkeypatch.setattr(smtpadmin.settings, "VAR_DIR", var_dir)
    monkeypatch.delenv("SECRET_KEY", raising=False)

    key = smtpadmin.settings._secret_key()

    assert (var_dir / "secret_key").read_text() == key
    assert mode(var_dir / "secret_key") == 0o600
    assert mode(var_dir) == mode(var_dir.parent) == 0o700  # parents it made too


def test_the_embedded_brokers_folders_are_private(
    var_dir: Path, settings: Any, permissive_umask: None
) -> None:
    broker = var_dir / "broker"
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(broker / "queue"),
        "data_folder_out": str(broker / "queue"),
        "control_folder": str(broker / "control"),
        "processed_folder": str(broker / "processed"),
    }

    smtpadmin.celery._make_broker_folders()

    assert modes_under(broker) == {".": 0o700, "queue": 0o700, "control": 0o700, "processed": 0o700}


@pytest.mark.django_db
def test_maildirs_are_private_from_the_drop_directory_down(
    var_dir: Path, permissive_umask: None
) -> None:
    world = make_world(var_dir)  # drop directory <var>/maildrop
    (entry_id,) = accept(envelope(world.vs, ["alice@smtpadmin.test"])).local_entry_ids

    assert deliver_local(entry_id, "node1/1") is True

    (delivered,) = (world.drop / "smtpadmin.test" / "alice" / "new").iterdir()
    assert mode(delivered) == 0o600
    assert not_private(var_dir) == {}
    alice = "maildrop/smtpadmin.test/alice"
    assert sorted(modes_under(var_dir)) == sorted(
        [".", "maildrop", "maildrop/smtpadmin.test", alice]
        + [f"{alice}/{sub}" for sub in ("tmp", "new", "cur")]
        + [f"{alice}/new/{delivered.name}"]
    )
    assert mode(var_dir.parent) == 0o700


def test_protocol_logs_are_private(var_dir: Path, permissive_umask: None) -> None:
    with ProtocolLog(3, "SMTPSVC3", "node1") as protocol_log:
        protocol_log.write(
            client_ip="192.0.2.1",
            username="app",
            server_ip="127.0.0.1",
            server_port=25,
            method="MAIL",
            argument="FROM:<a@b.test>",
            status=250,
        )

    (log_file,) = (var_dir / "logs" / "SMTPSVC3").iterdir()
    assert b"FROM:<a@b.test>" in log_file.read_bytes()
    assert mode(log_file) == 0o600
    assert not_private(var_dir) == {}


def test_badmail_is_private(var_dir: Path, permissive_umask: None) -> None:
    eml = write_badmail(
        badmail_directory(None), b"Subject: lost\r\n\r\nbody\r\n", "a double bounce"
    )

    assert eml.parent == var_dir / "badmail"
    assert sorted(p.suffix for p in eml.parent.iterdir()) == [".eml", ".txt"]
    assert not_private(var_dir) == {}


def run_with(var: Path, *command: str, **extra: str) -> subprocess.Popen[bytes]:
    """A project process on a fresh var directory; it inherits this test's umask."""
    environ = {
        **os.environ,
        "SMTPADMIN_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'smtpadmin.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    environ.pop("SECRET_KEY", None)
    return subprocess.Popen(
        command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


# Opens the database, writes to it and reports the modes of its files while it is open (the
# -wal and -shm journals exist only then).
OPEN_THE_DATABASE = """
import os, stat
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE probe (x integer)")
    cursor.execute("INSERT INTO probe VALUES (1)")
name = connection.settings_dict["NAME"]
for suffix in ("", "-wal", "-shm"):
    print(suffix or "db", oct(stat.S_IMODE(os.stat(name + suffix).st_mode)))
"""


def test_a_manage_py_process_makes_the_sqlite_database_and_its_journals_private(
    tmp_path: Path, permissive_umask: None
) -> None:
    var = tmp_path / "var"
    process = run_with(var, sys.executable, "manage.py", "shell", "-c", OPEN_THE_DATABASE)
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 0, output.decode(errors="replace")
    assert output.decode().split("\n")[-4:] == ["db 0o600", "-wal 0o600", "-shm 0o600", ""]
    assert (var / "secret_key").is_file()
    assert (var / "broker" / "queue").is_dir()
    assert not_private(var) == {}


def test_celery_beat_makes_its_schedule_file_private(
    tmp_path: Path, permissive_umask: None
) -> None:
    var = tmp_path / "var"
    beat = run_with(var, str(Path(sys.executable).parent / "celery"), "-A", "smtpadmin", "beat")
    try:
        deadline = time.monotonic() + 60
        while not list(var.glob("celerybeat-schedule*")) and beat.poll() is None:
            assert time.monotonic() < deadline, "beat wrote no schedule file"
            time.sleep(0.1)
    finally:
        beat.terminate()
        output, _ = beat.communicate(timeout=30)

    assert list(var.glob("celerybeat-schedule*")), output.decode(errors="replace")
    assert not_private(var) == {}


def test_a_fresh_var_directory_made_by_the_code_passes_the_check(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None
) -> None:
    monkeypatch.setattr(smtpadmin.settings, "VAR_DIR", var_dir)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    smtpadmin.settings._secret_key()
    write_badmail(badmail_directory(None), b"Subject: lost\r\n\r\nbody\r\n", "why")

    assert w002() == []


# --- the check ----------------------------------------------------------------------------


def private_var(var_dir: Path) -> Path:
    make_folders(var_dir, 0o700)
    secret = var_dir / "secret_key"
    secret.write_text("k" * 50)
    secret.chmod(0o600)
    return secret


def test_the_check_warns_about_a_secret_file_others_can_read_and_says_how_to_fix_it(
    var_dir: Path,
) -> None:
    secret = private_var(var_dir)
    secret.chmod(0o644)

    (warning,) = w002()

    assert str(secret) in warning.msg
    assert warning.hint == f"Run: chmod -R go-rwx {var_dir} (files made from now on are private)."
    assert warning.level == 30  # a warning: the processes still start


def test_the_check_is_silent_once_the_file_is_fixed(var_dir: Path) -> None:
    secret = private_var(var_dir)
    secret.chmod(0o644)
    assert w002()

    secret.chmod(0o600)

    assert w002() == []


def test_the_check_warns_about_a_var_directory_others_can_enter(var_dir: Path) -> None:
    private_var(var_dir)
    var_dir.chmod(0o755)

    (warning,) = w002()

    assert f": {var_dir}." in warning.msg


def test_the_check_finds_mail_in_maildirs_others_can_reach_and_counts_the_rest(
    var_dir: Path,
) -> None:
    private_var(var_dir)
    new = make_folders(var_dir / "maildrop" / "node1" / "smtpadmin.test" / "alice" / "new", 0o755)
    for n in range(30):
        (new / f"{n}.M1.node1").write_bytes(b"Subject: private\n\nmail\n")
        (new / f"{n}.M1.node1").chmod(0o644)

    (warning,) = w002()

    assert str(var_dir / "maildrop") in warning.msg
    assert warning.msg.endswith(" and 15+ more.")


def test_the_check_does_not_look_inside_a_private_folder(var_dir: Path) -> None:
    private_var(var_dir)
    box = make_folders(var_dir / "maildrop" / "node1", 0o700)
    (box / "old-mail").write_bytes(b"Subject: from before\n\n")
    (box / "old-mail").chmod(0o644)  # unreachable for others behind its 0700 folder

    assert w002() == []


def test_static_files_may_stay_world_readable(var_dir: Path) -> None:
    private_var(var_dir)
    css = make_folders(var_dir / "staticfiles", 0o755) / "console.css"
    css.write_text("body {}")
    css.chmod(0o644)

    assert w002() == []


def test_the_check_names_a_sqlite_database_kept_outside_the_var_directory(
    var_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_var(var_dir)
    database = tmp_path / "elsewhere" / "smtpadmin.sqlite3"
    database.parent.mkdir()
    for path in (database, Path(f"{database}-wal")):
        path.write_bytes(b"")
        path.chmod(0o644)
    default = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}
    # Only what the check reads: the test's own database connection stays as it is.
    monkeypatch.setattr(django_settings, "DATABASES", {"default": default})

    (warning,) = w002()

    assert warning.msg.endswith(f": {database}, {database}-wal.")
    assert warning.hint.startswith(f"Run: chmod -R go-rwx {var_dir} {database} {database}-wal")


def test_the_check_is_silent_when_there_is_no_var_directory_yet(var_dir: Path) -> None:
    assert not var_dir.exists()

    assert w002() == []
