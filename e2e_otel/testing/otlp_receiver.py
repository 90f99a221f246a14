"""A real, in-process OTLP trace receiver for tests.

``OTLPReceiver`` listens on 127.0.0.1 (ephemeral ports) for both OTLP/gRPC
(``TraceService/Export``) and OTLP/HTTP (``POST /v1/traces`` with binary
protobuf or OTLP/JSON, optionally gzip/deflate compressed).  Everything that
arrives is decoded and flattened into :class:`ReceivedSpan` objects so tests
can assert on what the *real* SDK exporters put on the wire::

    with OTLPReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        ...
        spans = receiver.wait_for_spans(count=2)
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

__all__ = [
    "TRACES_PATH",
    "OTLPReceiver",
    "ReceivedRequest",
    "ReceivedSpan",
    "any_value_to_python",
    "attributes_to_dict",
    "parse_otlp_json",
]

if TYPE_CHECKING:
    from typing_extensions import Self

_logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_HOST = "127.0.0.1"

# OTLP/JSON encodes these bytes fields as hex strings instead of base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


# --------------------------------------------------------------------------- #
# Data model
# --------------------------------------------------------------------------- #


@dataclass
class ReceivedSpan:
    """One span as received over the wire, flattened for easy assertions.

    ``kind`` and ``status_code`` are the *OTLP* enum values (e.g. kind 1 =
    INTERNAL, 2 = SERVER, 3 = CLIENT; status 0 = UNSET, 1 = OK, 2 = ERROR),
    which differ from the Python API enums.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    status_code: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    start_time_unix_nano: int
    end_time_unix_nano: int
    transport: str
    scope_version: str = ""
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        """OTLP kind name, e.g. ``"SPAN_KIND_SERVER"``."""
        try:
            return str(PbSpan.SpanKind.Name(self.kind))
        except ValueError:
            return str(self.kind)

    @property
    def status_name(self) -> str:
        """OTLP status code name, e.g. ``"STATUS_CODE_ERROR"``."""
        try:
            return str(PbStatus.StatusCode.Name(self.status_code))
        except ValueError:
            return str(self.status_code)

    @property
    def is_root(self) -> bool:
        """True when the span has no parent."""
        return not self.parent_span_id

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_time_unix_nano - self.start_time_unix_nano

    def event(self, name: str) -> dict[str, Any] | None:
        """Attributes of the first event called ``name`` (or None)."""
        for event_name, attrs in self.events:
            if event_name == name:
                return attrs
        return None


@dataclass
class ReceivedRequest:
    """One accepted export request with its transport metadata.

    ``headers`` holds lower-cased HTTP headers or gRPC invocation metadata.
    """

    transport: str
    headers: dict[str, str]
    request: ExportTraceServiceRequest
    content_type: str = ""
    content_encoding: str = ""

    @property
    def span_count(self) -> int:
        """Number of spans in the request."""
        return sum(len(ss.spans) for rs in self.request.resource_spans for ss in rs.scope_spans)


# --------------------------------------------------------------------------- #
# Conversion helpers
# --------------------------------------------------------------------------- #


def any_value_to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` into a plain Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    if which == "bytes_value":
        return bytes(value.bytes_value)
    return getattr(value, which)


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Convert repeated ``KeyValue`` into a dict (later keys win)."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def _hex(raw: bytes) -> str:
    return raw.hex() if raw else ""


def _hex_ids_to_base64(node: Any) -> Any:
    """Recursively rewrite OTLP/JSON hex ids into protobuf-JSON base64."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, val in node.items():
            if key in _HEX_ID_KEYS and isinstance(val, str):
                out[key] = _hex_to_base64(val)
            else:
                out[key] = _hex_ids_to_base64(val)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _hex_to_base64(val: str) -> str:
    if val == "":
        return val
    try:
        raw = bytes.fromhex(val)
    except ValueError:
        return val  # not hex: assume it is already base64
    return base64.b64encode(raw).decode("ascii")


def parse_otlp_json(body: bytes | str) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON ``ExportTraceServiceRequest`` (hex trace/span ids)."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise TypeError("OTLP/JSON body must be a JSON object")
    message = ExportTraceServiceRequest()
    json_format.ParseDict(_hex_ids_to_base64(data), message, ignore_unknown_fields=True)
    return message


def _flatten(request: ExportTraceServiceRequest, transport: str) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id),
                        name=span.name,
                        kind=int(span.kind),
                        attributes=attributes_to_dict(span.attributes),
                        resource=dict(resource),
                        scope_name=scope_name,
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        events=[(ev.name, attributes_to_dict(ev.attributes)) for ev in span.events],
                        start_time_unix_nano=int(span.start_time_unix_nano),
                        end_time_unix_nano=int(span.end_time_unix_nano),
                        transport=transport,
                        scope_version=scope_version,
                        links=[
                            (_hex(link.trace_id), _hex(link.span_id), attributes_to_dict(link.attributes))
                            for link in span.links
                        ],
                    )
                )
    return spans


def _normalize_trace_id(trace_id: str | int) -> str:
    if isinstance(trace_id, int):
        return format(trace_id, "032x")
    return trace_id.lower()


# --------------------------------------------------------------------------- #
# gRPC side
# --------------------------------------------------------------------------- #


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """gRPC ``TraceService`` that hands requests to the receiver."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        failure = self._receiver.failure_status
        if failure is not None:
            self._receiver._note_rejected()
            context.abort(grpc.StatusCode.UNAVAILABLE, f"injected failure (status {failure})")
        headers = {str(k).lower(): _metadata_value(v) for k, v in context.invocation_metadata()}
        self._receiver._record(ReceivedRequest(transport="grpc", headers=headers, request=request))
        return trace_service_pb2.ExportTraceServiceResponse()


def _metadata_value(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# --------------------------------------------------------------------------- #
# HTTP side
# --------------------------------------------------------------------------- #


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: OTLPReceiver


class _Handler(BaseHTTPRequestHandler):
    """Handles ``POST /v1/traces`` (protobuf or JSON)."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("otlp-receiver http: " + format, *args)

    def do_GET(self) -> None:
        self._send(405, b"method not allowed", "text/plain")

    do_PUT = do_GET
    do_DELETE = do_GET

    def do_POST(self) -> None:
        receiver = self.server.receiver
        try:
            body = self._read_body()
        except (ValueError, OSError) as exc:
            self._send(400, f"bad request body: {exc}".encode(), "text/plain")
            return
        path = self.path.split("?", 1)[0]
        if path != TRACES_PATH:
            self._send(404, b"not found", "text/plain")
            return

        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        is_json = content_type == "application/json"

        failure = receiver.failure_status
        if failure is not None:
            receiver._note_rejected()
            self._send_status(failure, f"injected failure (status {failure})", is_json)
            return

        if content_type not in ("application/x-protobuf", "application/json"):
            self._send(415, b"unsupported content type", "text/plain")
            return
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._send_status(415, f"unsupported content encoding {encoding!r}", is_json)
                return
            if is_json:
                request = parse_otlp_json(body)
            else:
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
        except Exception as exc:  # any decode problem is a 400
            self._send_status(400, f"cannot decode request: {exc}", is_json)
            return

        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver._record(
            ReceivedRequest(
                transport="http",
                headers=headers,
                request=request,
                content_type=content_type,
                content_encoding=encoding,
            )
        )
        response = ExportTraceServiceResponse()
        if is_json:
            self._send(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._send(200, response.SerializeToString(), "application/x-protobuf")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # consume trailers
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_status(self, code: int, message: str, is_json: bool) -> None:
        """Send an error body as a ``google.rpc.Status`` (per OTLP/HTTP spec)."""
        try:
            from google.rpc import status_pb2

            status = status_pb2.Status(code=code, message=message)
            if is_json:
                self._send(code, json_format.MessageToJson(status).encode(), "application/json")
            else:
                self._send(code, status.SerializeToString(), "application/x-protobuf")
        except ImportError:  # pragma: no cover - googleapis-common-protos missing
            self._send(code, message.encode(), "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --------------------------------------------------------------------------- #
# Receiver
# --------------------------------------------------------------------------- #


class OTLPReceiver:
    """In-process OTLP trace receiver (gRPC + HTTP) storing what arrives."""

    def __init__(self, host: str = _HOST, grpc_workers: int = 4) -> None:
        self._host = host
        self._grpc_workers = grpc_workers
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ReceivedRequest] = []
        self._rejected = 0
        self._failure: int | None = None
        self._grpc_server: grpc.Server | None = None
        self._grpc_port: int | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Start both servers on ephemeral ports; returns ``self``."""
        if self.running:
            raise RuntimeError("OTLPReceiver already started")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._grpc_workers))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceServicer(self), server
        )
        port = server.add_insecure_port(f"{self._host}:0")
        if not port:
            raise RuntimeError("could not bind gRPC port")
        server.start()
        self._grpc_server, self._grpc_port = server, port

        try:
            http_server = _HTTPServer((self._host, 0), _Handler)
        except Exception:
            server.stop(None)
            self._grpc_server = None
            raise
        http_server.receiver = self
        thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver-http",
            daemon=True,
        )
        thread.start()
        self._http_server, self._http_thread = http_server, thread
        return self

    def stop(self) -> None:
        """Stop both servers (fast: no grace period)."""
        grpc_server, self._grpc_server = self._grpc_server, None
        http_server, self._http_server = self._http_server, None
        thread, self._http_thread = self._http_thread, None
        stopped = grpc_server.stop(grace=None) if grpc_server is not None else None
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
        if thread is not None:
            thread.join(timeout=1.0)
        if stopped is not None:
            stopped.wait(timeout=1.0)
        with self._cond:
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._grpc_server is not None or self._http_server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- endpoints ---------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        """Port of the gRPC server."""
        if self._grpc_server is None or self._grpc_port is None:
            raise RuntimeError("OTLPReceiver is not running")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        """Port of the HTTP server."""
        if self._http_server is None:
            raise RuntimeError("OTLPReceiver is not running")
        return int(self._http_server.server_address[1])

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (use with ``insecure=True``)."""
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Full OTLP/HTTP traces URL, ``http://127.0.0.1:PORT/v1/traces``."""
        return f"http://{self._host}:{self.http_port}{TRACES_PATH}"

    @property
    def http_base_endpoint(self) -> str:
        """Base URL suitable for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (HTTP)."""
        return f"http://{self._host}:{self.http_port}"

    # -- fault injection ---------------------------------------------------

    def set_failure(self, status: int | None) -> None:
        """Reject exports: HTTP answers ``status``, gRPC aborts UNAVAILABLE.

        ``None`` restores normal operation.
        """
        with self._cond:
            self._failure = status

    @property
    def failure_status(self) -> int | None:
        """Currently injected failure status, if any."""
        return self._failure

    @property
    def rejected_count(self) -> int:
        """Number of export attempts rejected by injected failures."""
        with self._cond:
            return self._rejected

    def _note_rejected(self) -> None:
        with self._cond:
            self._rejected += 1
            self._cond.notify_all()

    # -- storage -----------------------------------------------------------

    def _record(self, request: ReceivedRequest) -> None:
        spans = _flatten(request.request, request.transport)
        with self._cond:
            self._requests.append(request)
            self._spans.extend(spans)
            self._cond.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Copy of all spans received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Copy of all accepted export requests (with headers/metadata)."""
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        """Forget received spans, requests and the rejected counter."""
        with self._cond:
            self._spans.clear()
            self._requests.clear()
            self._rejected = 0

    def spans_for_trace(self, trace_id: str | int) -> list[ReceivedSpan]:
        """Spans of one trace (hex string or int trace id)."""
        wanted = _normalize_trace_id(trace_id)
        return [s for s in self.spans if s.trace_id == wanted]

    def find(self, name: str) -> list[ReceivedSpan]:
        """Spans with the given name."""
        return [s for s in self.spans if s.name == name]

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` is true; return the spans.

        Raises ``AssertionError`` describing what did arrive on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = list(self._spans)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.1))
        names = [s.name for s in snapshot]
        raise AssertionError(
            f"OTLPReceiver: condition not met within {timeout:.1f}s; "
            f"received {len(snapshot)} span(s) in {len(self.requests)} request(s) "
            f"({self.rejected_count} rejected): {names!r}"
        )

    def wait_for_spans(
        self,
        count: int = 1,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans (named ``name`` if given) arrived.

        Returns the matching spans.
        """

        def matching(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if name is None or s.name == name]

        try:
            spans = self.wait_for(lambda spans: len(matching(spans)) >= count, timeout=timeout)
        except AssertionError as exc:
            what = f"{count} span(s)" + (f" named {name!r}" if name is not None else "")
            raise AssertionError(f"waiting for {what}: {exc}") from None
        return matching(spans)

    def __repr__(self) -> str:
        if not self.running:
            return "<OTLPReceiver stopped>"
        return f"<OTLPReceiver grpc={self.grpc_port} http={self.http_port} spans={len(self.spans)}>"
