"""The benchmark's helper process: the OTLP receiver and a stalling MariaDB proxy.

Both live outside the measured workers so their threads never compete for a worker's GIL.
Run as ``python -m bench_project.sidecar --proxy-delay 0.25``; it prints one JSON line with its
endpoints, then answers ``counts`` (spans received per service.name) and ``quit`` on stdin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time

from e2e_otel.testing.otlp_receiver import OTLPReceiver, ReceivedRequest


class CountingReceiver(OTLPReceiver):
    """The real OTLP receiver, but it only counts spans per service instead of keeping them.

    Keeping 100k decoded spans would grow the sidecar's memory and CPU for nothing; the benchmark
    only needs to know that each configuration's spans arrived. Runs on the receiver's gRPC threads.
    """

    def __init__(self) -> None:
        super().__init__(grpc_workers=4)
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def _record(self, request: ReceivedRequest) -> None:
        with self._count_lock:
            for resource_spans in request.request.resource_spans:
                service = next((kv.value.string_value for kv in resource_spans.resource.attributes
                                if kv.key == "service.name"), "unknown")
                n = sum(len(scope.spans) for scope in resource_spans.scope_spans)
                self.counts[service] = self.counts.get(service, 0) + n

    def snapshot(self) -> dict[str, int]:
        """Spans received so far, per ``service.name``."""
        with self._count_lock:
            return dict(self.counts)


class StallingProxy:
    """TCP proxy to MariaDB that holds every chunk for ``delay`` seconds in each direction.

    A record writer behind it sees a database that answers, but hundreds of milliseconds late on
    every round trip (like a saturated or lock-bound server). Accept loop and pumps run on their own
    daemon threads.
    """

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy-delay", type=float, default=0.25)
    parser.add_argument("--db-host", default=os.environ.get("BENCH_DB_HOST", "127.0.0.1"))
    parser.add_argument("--db-port", type=int, default=int(os.environ.get("BENCH_DB_PORT", "3306")))
    args = parser.parse_args()
    receiver = CountingReceiver().start()
    proxy = StallingProxy((args.db_host, args.db_port), args.proxy_delay)
    print(json.dumps({"grpc_endpoint": receiver.grpc_endpoint, "proxy_port": proxy.port}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "counts":
                print(json.dumps(receiver.snapshot()), flush=True)
            elif command == "quit":
                break
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
