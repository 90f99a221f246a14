// The OpenTelemetry JS web setup a React/Next.js frontend would ship, pointed at e2e-otel.
//
// Frontend and Django API live on different origins (like `next dev` on :3000 and Django on :8000):
// - spans go to e2e-otel's OTLP/HTTP ingestion endpoint with the X-E2E-Ingest-Key header (a CORS
//   request with a preflight, answered by the endpoint's origin allow-list);
// - the fetch instrumentation adds `traceparent` + `baggage` to calls to the API origin
//   (`propagateTraceHeaderCorsUrls`), so Django's server span joins the browser's trace;
// - the "Checkout" button opens a manual "click checkout" span carrying the W3C baggage entry
//   `e2e.workflow=checkout`, which names the workflow on the server.
//
// Configuration comes from `window.E2E_CONFIG` = {apiBase, ingestUrl, ingestKey} (set by the page).
// What happened is published on `window.E2E_STATE` for tests/browser/drive.mjs to read.

import { context, propagation, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  CompositePropagator,
  ExportResultCode,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { DocumentLoadInstrumentation } from '@opentelemetry/instrumentation-document-load';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, WebTracerProvider } from '@opentelemetry/sdk-trace-web';

const config = window.E2E_CONFIG;
const state = {
  ready: false, // documentLoad span ended
  done: false, // checkout finished and the exporter flushed
  traceId: null,
  ended: [], // {name, traceId, spanId, parentSpanId} of every ended span
  exports: [], // {ok, spans, error} per export call
  apiStatus: null,
  apiError: null,
  correlationHeader: null,
};
window.E2E_STATE = state;

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Wraps the real OTLP exporter only to publish each export's outcome for the test. */
class ObservedExporter {
  constructor(inner) {
    this.inner = inner;
  }

  export(spans, resultCallback) {
    this.inner.export(spans, (result) => {
      state.exports.push({
        ok: result.code === ExportResultCode.SUCCESS,
        spans: spans.length,
        error: result.error ? String(result.error.cause || result.error) : null,
      });
      resultCallback(result);
    });
  }

  forceFlush() {
    return this.inner.forceFlush();
  }

  shutdown() {
    return this.inner.shutdown();
  }
}

/** Records ended spans so the page knows when the async fetch span has ended. */
const endedSpans = {
  onStart() {},
  onEnd(span) {
    const ctx = span.spanContext();
    state.ended.push({
      name: span.name,
      traceId: ctx.traceId,
      spanId: ctx.spanId,
      parentSpanId: span.parentSpanContext ? span.parentSpanContext.spanId : null,
    });
    if (span.name === 'documentLoad') state.ready = true;
  },
  forceFlush() {
    return Promise.resolve();
  },
  shutdown() {
    return Promise.resolve();
  },
};

const exporter = new ObservedExporter(
  new OTLPTraceExporter({
    url: config.ingestUrl,
    headers: { 'X-E2E-Ingest-Key': config.ingestKey },
    timeoutMillis: 3000, // bounds the retries when the endpoint refuses this origin
  }),
);

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'shop-web', 'deployment.environment': 'testing' }),
  spanProcessors: [endedSpans, new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register({
  propagator: new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  }),
});

registerInstrumentations({
  tracerProvider: provider,
  instrumentations: [
    new DocumentLoadInstrumentation(),
    new FetchInstrumentation({
      propagateTraceHeaderCorsUrls: [new RegExp('^' + escapeRegExp(config.apiBase))],
      ignoreUrls: [new RegExp('^' + escapeRegExp(config.ingestUrl))],
      clearTimingResources: true,
    }),
  ],
});

const tracer = trace.getTracer('shop-web-checkout', '1.0.0');

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate() && Date.now() < deadline) await sleep(20);
  return predicate();
}

async function checkout() {
  const bag = propagation.createBaggage({ 'e2e.workflow': { value: 'checkout' } });
  const parent = propagation.setBaggage(context.active(), bag);
  const span = tracer.startSpan(
    'click checkout',
    { kind: SpanKind.INTERNAL, attributes: { 'e2e.component': 'CheckoutButton', 'e2e.operation': 'click' } },
    parent,
  );
  state.traceId = span.spanContext().traceId;
  try {
    // The fetch instrumentation reads the active context synchronously, when fetch() is called.
    const response = await context.with(trace.setSpan(parent, span), () =>
      fetch(config.apiBase + 'browser/checkout/', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ cart: [1, 2, 3] }),
      }),
    );
    state.apiStatus = response.status;
    state.correlationHeader = response.headers.get('X-Correlation-ID');
    await response.json();
  } catch (error) {
    state.apiError = String(error);
    span.recordException(error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
  } finally {
    span.end();
  }
  // The fetch span ends asynchronously (after resource timing); export only once it has ended.
  await waitFor(() => state.ended.some((s) => s.traceId === state.traceId && s.parentSpanId === span.spanContext().spanId), 3000);
  await provider.forceFlush();
  state.done = true;
}

document.getElementById('checkout').addEventListener('click', () => {
  checkout().catch((error) => {
    state.apiError = String(error);
    state.done = true;
  });
});
