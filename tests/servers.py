"""Start and stop subprocess servers (runserver, gunicorn, any command) for tests.

``ServerProcess`` picks a free port, starts the command in its own process group with the given
environment, waits until the port accepts connections, keeps stdout+stderr in a log file, and on
``stop()`` (always called by the context manager) terminates, then kills, the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (bound and released; nothing else should take it this quickly)."""
    return free_port()


def subprocess_env(extra: Mapping[str, str] | None = None, *, drop_otel: bool = True) -> dict[str, str]:
    """The current environment for a child Python: repo on the path, no inherited ``OTEL_*``."""
    env = {k: v for k, v in os.environ.items() if not (drop_otel and k.startswith("OTEL_"))}
    env.pop("E2E_OTEL_ENVIRONMENT", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    env.update(extra or {})
    return env


class ServerProcess:
    """One subprocess server listening on ``self.port``; use as a context manager."""

    def __init__(self, argv: Sequence[str], *, port: int, env: Mapping[str, str],
                 startup_timeout: float = 20.0) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = dict(env)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in __exit__
            prefix="e2e-server-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.argv, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not listen on {self.port} in {self.startup_timeout}s:\n{self.logs()}")

    def get(self, path: str, headers: Mapping[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """GET ``path``; returns (status, lower-cased headers, body) also for error statuses."""
        request = urllib.request.Request(self.base_url + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def logs(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it if it lingers; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(5)
        _signal_group(process.pid, signal.SIGKILL)  # stragglers (gunicorn workers) of the group
        return process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def runserver(env: Mapping[str, str], port: int | None = None) -> ServerProcess:
    """``django-admin runserver`` (threaded, without the autoreloader)."""
    port = port or free_port()
    argv = [PYTHON, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"]
    return ServerProcess(argv, port=port, env=env)


def gunicorn(env: Mapping[str, str], *, workers: int = 1, preload: bool = False,
             app: str = "tests.wsgi:application", port: int | None = None) -> ServerProcess:
    port = port or free_port()
    argv = [str(BIN_DIR / "gunicorn"), app, "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "--graceful-timeout", "3", "--timeout", "30"]
    if preload:
        argv.append("--preload")
    return ServerProcess(argv, port=port, env=env)
