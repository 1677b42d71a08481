"""Files that hold secrets or mail (the SQLite database, the broker's messages, Maildirs,
badmail, protocol logs, the secret key, beat's schedule) are for this process's user alone.

Two layers, because either alone leaks: every process of the project narrows its umask when it
imports the ``smtpadmin`` package, which covers the files that libraries create (SQLite's
database and its -wal/-shm journals, kombu's broker messages, beat's shelve); and our own code
creates its files and folders with explicit modes, which holds in any process, whatever its
umask. ``exposed`` finds what predates this, for the system check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

# Group and others get nothing: files come out 0600, folders 0700.
PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def restrict_umask() -> None:
    """Narrow the process umask to at least ``PRIVATE_UMASK``, keeping any stricter bits."""
    current = os.umask(PRIVATE_UMASK)
    os.umask(current | PRIVATE_UMASK)


def private_directory(path: str | Path) -> Path:
    """``mkdir -p`` where every folder it creates, parents included, is 0700 (``Path.mkdir``
    gives the parents the umask's mode). Existing folders keep their mode."""
    path = Path(path)
    missing: list[Path] = []
    cursor = path
    while not cursor.is_dir():
        missing.append(cursor)
        if cursor.parent == cursor:
            break
        cursor = cursor.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another process made it meanwhile: its mode is its own
        # mkdir's mode passes through the umask; a umask that takes the owner's bits is no
        # reason to leave a folder we cannot use.
        os.chmod(folder, DIRECTORY_MODE)
    return path


def open_private(path: str | Path, flags: int) -> int:
    """``os.open`` creating the file 0600 (never wider, whatever the umask)."""
    return os.open(path, flags | os.O_CREAT, FILE_MODE)


def exposed(
    root: Path, *, public: Collection[Path] = (), also: Iterable[Path] = (), limit: int = 20
) -> list[Path]:
    """Paths under ``root`` (and the files ``also``) that group or others may use, at most
    ``limit``. ``root``'s own entries are always looked at; deeper folders only when others
    can enter the folder above (a 0700 folder keeps all it holds private, so a large Maildir
    behind one costs nothing). ``public`` paths (static files) are skipped. Symbolic links are
    not followed: their own mode means nothing."""
    found: list[Path] = []
    skip = {Path(p) for p in public}
    # A stack, so the root's tree comes first, then ``also`` in its order.
    stack: list[tuple[Path, bool]] = [(Path(p), False) for p in reversed(list(also))]
    stack.append((root, True))
    while stack and len(found) < limit:
        path, is_root = stack.pop()
        if path in skip:
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & 0o077:
            found.append(path)
        enterable = bool(info.st_mode & 0o011)
        if stat.S_ISDIR(info.st_mode) and (is_root or enterable):
            try:
                with os.scandir(path) as entries:
                    children = sorted(Path(entry.path) for entry in entries)
            except OSError:
                continue
            stack.extend((child, False) for child in reversed(children))
    return found
