"""One run for ``benchmarks/instructions.py``, under callgrind: warm up, then ``N`` requests, then
the flushes, then exit.

Run as ``python -m bench_project.count_requests CONFIG VIEW WARMUP N`` from ``benchmarks/``. Two runs
that differ only in ``N`` differ only by ``N`` requests' worth of instructions (start-up, warm-up
and exit cancel out), which is how the driver gets a per-request count free of timing noise.
"""

from __future__ import annotations

import os
import sys
import threading

from bench_project.worker import FLUSH_RECORDS, Worker


def _flush(worker: Worker, config: str) -> None:
    worker._flush_export()
    worker._flush_derived(120.0)
    if config in FLUSH_RECORDS:
        worker._flush_records(120.0)


def main() -> None:
    config, view, warmup, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    worker = Worker(config)
    for phase in (warmup, n):
        for _ in range(phase):
            worker._call(view)
        # On a thread of its own: the SDK's force_flush exports what is queued on the calling
        # thread, and how much is still queued depends on timing. The main thread's count must be
        # the requests' alone.
        flusher = threading.Thread(target=_flush, args=(worker, config), name="bench-flush")
        flusher.start()
        flusher.join()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: identical in both runs, but slow under callgrind


if __name__ == "__main__":
    main()
