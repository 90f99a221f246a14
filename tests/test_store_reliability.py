"""RecordWriter under hostile values and failures: sanitised on the way in, refusals classified."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.sanitize import Sanitizer
from e2e_otel.spans_to_records import ErrorData, MetricData, StepData, WorkflowHints
from e2e_otel.store import RecordWriter
from tests.test_store import config, make_step


@pytest.fixture
def writers() -> Iterator[Any]:
    made: list[RecordWriter] = []

    def make(*, start: bool = True, alias: str | None = None, **options: Any) -> RecordWriter:
        made.append(RecordWriter(config(**options), Sanitizer(), alias=alias, start=start))
        return made[-1]

    yield make
    for writer in made:
        writer.shutdown(2)


def cid(step: StepData) -> uuid.UUID:
    return uuid.UUID(int=step.trace_id)


def with_metric(value: float, **fields: Any) -> StepData:
    now = time.time_ns()
    metric = MetricData(layer="frontend", component="/home", name="lcp", value=value, unit="ms",
                        timestamp_ns=now, metadata=fields)
    step = make_step()
    return StepData(**{**{f: getattr(step, f) for f in step.__dataclass_fields__}, "metrics": (metric,)})


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_metric_drops_only_its_snapshot(writers: Any, value: float) -> None:
    writer = writers()
    bad, ordinary = with_metric(value), make_step()
    writer.submit(bad)
    writer.submit(ordinary)
    assert writer.force_flush(10)
    assert WorkflowSession.objects.filter(correlation_id__in=[cid(bad), cid(ordinary)]).count() == 2
    assert TraceStep.objects.filter(correlation_id=cid(ordinary)).count() == 1
    assert not PerformanceSnapshot.objects.filter(correlation_id=cid(bad)).exists()
    stats = writer.stats()
    assert stats["dropped"]["invalid_value"] == 1 and stats["written"]["snapshot"] == 0
    assert stats["written"]["step"] == 2


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_surrogates_nul_and_non_finite_metadata_are_stored_cleaned(writers: Any) -> None:
    writer = writers()
    step = make_step(name="GET \ud800 /x\x00/", attributes={"score": float("nan"),
                                                               "code.function": "f\udfff\x00",
                                                               "peer.service": [1.0, float("inf")]})
    error = ErrorData(error_type="Value\ud83dError", message="bad \udc00 json\x00", stacktrace="",
                      layer="api", component="/x\ud800/", operation="GET", fingerprint="f" * 64,
                      severity="error", category="validation", timestamp_ns=time.time_ns(),
                      metadata={"ratio": float("-inf")})
    step = StepData(**{**{f: getattr(step, f) for f in step.__dataclass_fields__}, "errors": (error,),
                       "status": "error",
                       "hints": WorkflowHints(route_key="GET /x/", user_id="u\ud800", metadata={"m": math.nan})})
    writer.submit(step)
    after = make_step()
    writer.submit(after)
    assert writer.force_flush(10)
    row = TraceStep.objects.get(correlation_id=cid(step))
    assert row.name == "GET \ufffd /x/"
    assert row.metadata == {"score": None, "code.function": "f\ufffd", "peer.service": [1.0, None]}
    logged = ErrorLog.objects.get(correlation_id=cid(step))
    assert logged.error_message == "bad \ufffd json" and logged.error_type == "Value\ufffdError"
    assert logged.metadata == {"operation": "GET", "ratio": None}
    session = WorkflowSession.objects.get(correlation_id=cid(step))
    assert session.user_id == "u\ufffd" and session.metadata == {"m": None}
    assert TraceStep.objects.filter(correlation_id=cid(after)).count() == 1
    stats = writer.stats()
    assert stats["written"] == {"session": 2, "step": 2, "error": 1, "snapshot": 0}
    assert not any(stats["dropped"].values())
