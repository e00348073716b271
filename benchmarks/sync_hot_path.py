"""One measurement of the sync `Database` hot path, in this process, with whichever
flowledger is first on sys.path: point lookups by id (`db.executions.get`) and pages of 50
(`db.executions.list(limit=50)`), each call borrowing a pool connection.

benchmarks/async_faces.py runs it in fresh processes, alternately with PYTHONPATH set to
this tree's src/ and to a baseline checkout's, so that both run on one database:

    PYTHONPATH=CHECKOUT/src python benchmarks/sync_hot_path.py URL PAGES < ids.json

It reads the execution ids to look up (a JSON list) on stdin and prints one JSON object:
`{"module": the flowledger imported, "lookup": calls per second, "page": pages per
second, "lookup_cpu" / "page_cpu": this process's CPU µs per call}` (the CPU figure
depends far less than the rate on what else the machine runs). It imports only what every
checkout has: `flowledger.connect` and the executions repository.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time

import flowledger

ROUNDS = 3  # lookups and pages alternated this often in one process; the median is reported


def measure(url: str, ids: list[str], pages: int) -> dict[str, float]:
    """Calls per second of `executions.get` over `ids` and of `pages` first pages of 50
    (the median of ROUNDS alternations)."""

    db = flowledger.connect(url, min_size=1, max_size=1)
    try:
        get, page = db.executions.get, db.executions.list
        # Warm-up: prepared statements, plan caches, the decoders' first use.
        for i in ids[: max(1, len(ids) // 10)]:
            get(id=i)
        for _ in range(max(1, pages // 10)):
            page(limit=50)
        rates: dict[str, list[float]] = {"lookup": [], "page": [], "lookup_cpu": [], "page_cpu": []}
        for _ in range(ROUNDS):
            gc.collect()
            start, cpu = time.perf_counter(), time.process_time()
            for i in ids:
                get(id=i)
            rates["lookup"].append(len(ids) / (time.perf_counter() - start))
            rates["lookup_cpu"].append((time.process_time() - cpu) / len(ids) * 1e6)
            gc.collect()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(pages):
                page(limit=50)
            rates["page"].append(pages / (time.perf_counter() - start))
            rates["page_cpu"].append((time.process_time() - cpu) / pages * 1e6)
        return {key: statistics.median(values) for key, values in rates.items()}
    finally:
        db.close()


def main() -> int:
    url, pages = sys.argv[1], int(sys.argv[2])
    ids = [str(i) for i in json.load(sys.stdin)]
    result: dict[str, object] = {"module": flowledger.__file__, **measure(url, ids, pages)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
