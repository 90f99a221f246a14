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

from bench_project.worker import Worker


def main() -> None:
    config, view, warmup, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    worker = Worker(config)
    for phase in (warmup, n):
        for _ in range(phase):
            worker._call(view)
        # On a thread of its own: the SDK's force_flush exports what is queued on the calling
        # thread, and how much is still queued depends on timing. The main thread's count must be
        # the requests' alone.
        flusher = threading.Thread(target=worker.flush, args=(120.0,), name="bench-flush")
        flusher.start()
        flusher.join()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: identical in both runs, but slow under callgrind


if __name__ == "__main__":
    main()
