"""Testing helpers for e2e-otel (OTLP receiver, pytest fixtures)."""
