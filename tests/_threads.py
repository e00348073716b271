"""Run test bodies on real threads at once, and re-raise the first error in the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg


def run_threads(targets: list[Callable[[], None]], timeout: float = 180) -> None:
    """Start a thread per target, wait for all (each at most `timeout` seconds), then
    re-raise the first exception a target raised; a thread still running fails the test."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def wait_for_a_lock_wait(conn: psycopg.Connection[Any], timeout: float = 30) -> None:
    """Return once a session of conn's database is waiting for a lock (conn in autocommit);
    fail the test when none is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        row = conn.execute(query).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"no session waited for a lock within {timeout} s")
