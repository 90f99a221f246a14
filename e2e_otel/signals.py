"""Django signals: extension points fired by the record writer thread (never the request thread).

Receivers run on the writer thread, so they must be quick and must not raise; they see rows that are
already committed.
"""

from __future__ import annotations

from django.dispatch import Signal

#: A workflow was closed (root ended, explicit complete/fail, or idle timeout).
#: kwargs: ``session`` (WorkflowSession), ``reason`` ("root_ended" | "explicit" | "idle_timeout").
workflow_closed = Signal()

#: A new ErrorLog group was created, or an open one got another occurrence.
#: kwargs: ``error`` (ErrorLog), ``created`` (bool).
error_recorded = Signal()

#: A threshold rule was breached. kwargs: ``layer``, ``component``, ``metric``, ``value``, ``severity``,
#: ``correlation_id`` (str | None). Sent by the threshold evaluator's background thread.
threshold_breached = Signal()
