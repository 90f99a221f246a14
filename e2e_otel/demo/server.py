"""Serve the demo's WSGI app from a background thread of the current process.

Django's own ``ThreadedWSGIServer`` (what ``runserver`` uses), one thread per request; static files
(admin CSS) go through ``StaticFilesHandler``. The server thread only accepts connections; each
request runs on its own daemon thread.
"""

from __future__ import annotations

import errno
import threading

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application


class QuietRequestHandler(WSGIRequestHandler):
    """No per-request log lines: they would scroll the progress bar and summary away."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class DemoServer:
    """A started WSGI server on ``host:port`` (port 0 = a free one); ``url`` is where it listens."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        ipv6 = ":" in host
        self.httpd = ThreadedWSGIServer((host, port), QuietRequestHandler, ipv6=ipv6)
        self.httpd.set_app(StaticFilesHandler(get_wsgi_application()))
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="e2e-otel-demo-server", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> DemoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


DEFAULT_PORT = 8000


def bind_server(host: str, port: int | None, *, preferred: int = DEFAULT_PORT) -> tuple[DemoServer, str | None]:
    """A bound, not yet started server, and a note when it is not where the user may expect it.

    ``port=None`` (no ``--port``) means ``preferred``, or a free port when another process (another
    demo, say) has that one; an explicit port that is taken raises ``OSError`` as before.
    """
    if port is not None:
        return DemoServer(host, port), None
    try:
        return DemoServer(host, preferred), None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    server = DemoServer(host, 0)
    return server, f"port {preferred} is in use (another demo?); listening on {server.port} instead"
