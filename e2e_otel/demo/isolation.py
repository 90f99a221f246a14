"""One demo per database: a fresh SQLite file per run by default, and a lock on whichever database a run uses.

A second ``e2e-otel demo`` used to share the first one's SQLite file: it re-seeded the admin
password the first had printed and deleted the tokens its customers were logged in with. Now each
run without ``--db`` gets its own file under ``~/.cache/e2e-otel/demo-runs/`` (deleted when the run
ends), and a run that names a database another live demo holds is refused before it touches it:

- SQLite: an exclusive ``flock`` on ``<file>.lock``, which names the holder's pid. The kernel
  releases it when the process dies, so a killed run never leaves a stale lock, and the next run
  removes the per-run files whose lock nobody holds.
- MySQL: ``GET_LOCK('e2e_otel_demo:<database>', 0)`` on a connection of its own, held for the
  run; the server releases it when that connection ends.

Everything here runs on the CLI's main thread, before the server starts and after it stops.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: per-run files still keep runs apart
    fcntl = None  # type: ignore[assignment]

RUNS_DIR_NAME = "demo-runs"
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class DatabaseInUse(Exception):
    """Another running demo holds the database this run was asked to use."""


def runs_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "e2e-otel" / RUNS_DIR_NAME


def per_run_sqlite_path(directory: Path | None = None) -> Path:
    """A SQLite file no other run uses: pid and a random part, in :func:`runs_dir`."""
    directory = directory or runs_dir()
    return directory / f"run-{os.getpid()}-{secrets.token_hex(4)}.sqlite3"


def remove_sqlite_files(path: Path) -> None:
    """The database, its WAL/SHM/journal companions and its lock file; missing ones are fine."""
    for suffix in (*SQLITE_SUFFIXES, ".lock"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def remove_stale_runs(directory: Path | None = None) -> list[Path]:
    """Delete per-run databases left by runs that were killed (their lock is free); returns them."""
    directory = directory or runs_dir()
    removed = []
    for database in sorted(directory.glob("run-*.sqlite3")):
        try:
            lock = SQLiteLock(database).acquire()
        except DatabaseInUse:
            continue  # a live run's
        remove_sqlite_files(database)
        lock.release()
        removed.append(database)
    return removed


class SQLiteLock:
    """``flock`` on ``<database>.lock`` for as long as this process keeps it (or lives)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self) -> SQLiteLock:
        """Raise :class:`DatabaseInUse` (naming the holder's pid) if another process holds it."""
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"SQLite {self.database} is in use by another e2e-otel demo (pid {holder}); stop that one, "
                "or leave out --db to give this run a database of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class MySQLLock:
    """A MySQL named lock held on a connection of its own for the whole run."""

    def __init__(self, connection: Any, name: str) -> None:
        self.connection = connection  # a Django DatabaseWrapper, only used to open a new connection
        self.name = f"e2e_otel_demo:{name}"[:64]  # MySQL's limit on lock names
        self._raw: Any = None

    def acquire(self) -> MySQLLock:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with suppress_instrumentation():  # the lock is not part of any workflow
            raw = self.connection.get_new_connection(self.connection.get_connection_params())
            with raw.cursor() as cursor:
                cursor.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", [self.name, self.name])
                got, holder = cursor.fetchone()
        if got != 1:
            raw.close()
            raise DatabaseInUse(
                f"MySQL database {self.connection.settings_dict['NAME']!r} is in use by another e2e-otel demo "
                f"(lock {self.name!r} held by connection {holder}); stop that one, or point DATABASE_URL at "
                "another database"
            )
        self._raw = raw
        return self

    def release(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):  # the server drops the lock with the connection anyway
                self._raw.close()
            self._raw = None


def lock_database(connection: Any) -> SQLiteLock | MySQLLock:
    """Lock the database behind Django's ``connection`` for this run, or raise :class:`DatabaseInUse`."""
    if connection.vendor == "sqlite":
        return SQLiteLock(Path(connection.settings_dict["NAME"])).acquire()
    return MySQLLock(connection, str(connection.settings_dict["NAME"])).acquire()
