"""The reference workers across a real server restart: they log and count the failed calls,
pause, and go on once the server is back; no step is completed twice."""

from __future__ import annotations

import asyncio
import collections
import datetime
import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import flowledger
from _embedded import pg_ctl, reachable_dir
from conftest import PgServer
from flowledger.errors import Unavailable
from flowledger.records.identity import NewUser
from flowledger.records.runs import ClaimedStep
from flowledger.records.workflows import NewStage, NewWorkflow
from flowledger.tools.devserver import EmbeddedServer
from flowledger.tools.migrate import Migrator
from flowledger.worker import AsyncWorker, Worker

_STEPS = 240
_LEASE = datetime.timedelta(seconds=10)


@pytest.fixture(scope="module")
def restartable(pg_server: PgServer) -> Iterator[tuple[EmbeddedServer, str]]:
    # A server of its own (the suite's must not go down); the other server of the CI
    # matrix adds nothing here.
    if not pg_server.embedded:
        pytest.skip("the embedded test server is not the one under test")
    base = reachable_dir()
    server = EmbeddedServer(base / "worker-outage")
    url = server.ensure_running()
    try:
        with Migrator(url) as mig:
            mig.apply()
        yield server, url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _start_run(url: str, action: str) -> Any:
    """One execution of `_STEPS` steps of `action`; its id."""
    with flowledger.connect(url, max_size=1) as db:
        tag = os.urandom(5).hex()
        user = db.users.create(user=NewUser(email=f"o-{tag}@example.com", display_name="O"))
        wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name=f"o-{tag}"))
        db.stages.add(
            workflow_id=wf.id,
            stage=NewStage(name="each", action_ref=action, with_items=list(range(_STEPS))),
        )
        return db.executions.start(workflow_id=wf.id).id


def _restart_when(
    server: EmbeddedServer, ran: collections.Counter[int], at: int, down: threading.Event
) -> None:
    """Once `at` handlers ran, stop the server (fast: sessions end mid-transaction), set
    `down`, leave it down a second, and start it again. The handlers after the first `at`
    wait for `down` (`_hold_after`): the outage comes mid-drain however fast it runs."""
    deadline = time.monotonic() + 30
    # len(), not a sum over the values: another thread may be adding a key meanwhile.
    while len(ran) < at:
        assert time.monotonic() < deadline, "the worker did not get going"
        time.sleep(0.005)
    pg_ctl(server.pgdata, "stop")
    down.set()
    time.sleep(1.0)
    # restart also starts a stopped server, with the options it last ran with
    pg_ctl(server.pgdata, "restart", "-l", str(server.pgdata / "restart.log"))


def _hold_after(ran: collections.Counter[int], at: int, down: threading.Event) -> None:
    """Keep a handler from finishing, once `at` handlers ran, until the server is down."""
    if len(ran) >= at:
        assert down.wait(30), "the server was not stopped"


def _settle(url: str, run_id: Any) -> None:
    """Wait for the execution to complete, reaping meanwhile: a claim whose answer the
    outage lost holds its steps until their lease ends."""
    with flowledger.connect(url, max_size=1, pool_timeout=15) as db:
        deadline = time.monotonic() + 90
        while db.executions.get(id=run_id).status != "completed":
            assert time.monotonic() < deadline, "the execution did not complete"
            db.steps.reap()
            time.sleep(0.2)


def _check_once(url: str, run_id: Any, ran: collections.Counter[int]) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT s.task_index, s.status, count(a.*) FILTER (WHERE a.outcome = 'completed'),"
            "       count(a.*) FILTER (WHERE a.outcome IS DISTINCT FROM 'completed'"
            "                            AND a.outcome IS DISTINCT FROM 'lease_lost')"
            "  FROM execution_steps s LEFT JOIN step_attempts a ON a.step_id = s.id"
            " WHERE s.execution_id = %s GROUP BY s.task_index, s.status",
            (run_id,),
        ).fetchall()
    assert len(rows) == _STEPS
    # Every step completed by exactly one attempt; any other attempt was one whose claim
    # the outage cut off (its lease ran out, never run).
    assert {(status, completed, other) for _, status, completed, other in rows} == {
        ("completed", 1, 0)
    }
    # Each handler ran once: a result the outage kept from being written was written
    # after it (nothing runs again), and a claim whose answer it cut off never ran.
    assert set(ran) == set(range(_STEPS))
    assert set(ran.values()) == {1}, [i for i, n in ran.items() if n != 1]


def test_a_two_lane_worker_rides_out_a_server_restart(
    restartable: tuple[EmbeddedServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = restartable
    run_id = _start_run(url, "core.noop")
    ran: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    down = threading.Event()

    def handler(step: ClaimedStep) -> None:
        _hold_after(ran, _STEPS // 4, down)
        time.sleep(0.002)
        with lock:
            ran[step.task_index] += 1

    with flowledger.connect(url, max_size=8, pool_timeout=15) as db:
        worker = Worker(db, {"core.noop": handler}, concurrency=4, lease=_LEASE, prefetch=8)
        assert worker._lanes == 2
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(worker.run()))
        thread.start()
        try:
            _restart_when(server, ran, _STEPS // 4, down)
            _settle(url, run_id)
            # A lane may notice the outage only once the drain is done (its wake-up
            # connection died while it ran handlers and writes went through the pool):
            # its next pass, whenever that is, must say the database is reachable again.
            deadline = time.monotonic() + 30
            while not any("reachable again" in r.getMessage() for r in list(caplog.records)):
                assert time.monotonic() < deadline, "no pass after the outage was logged"
                time.sleep(0.05)
        finally:
            worker.stop()
            thread.join(60)
    assert not thread.is_alive() and outcome, "the worker did not end"
    stats = outcome[0]
    assert stats.outages >= 1
    _check_once(url, run_id, ran)
    warnings = [r.getMessage() for r in caplog.records if r.name == "flowledger.worker"]
    assert any("the database is unavailable" in m for m in warnings), warnings
    assert any("reachable again" in m for m in warnings), warnings


def test_an_async_worker_rides_out_a_server_restart(
    restartable: tuple[EmbeddedServer, str],
) -> None:
    server, url = restartable
    run_id = _start_run(url, "core.wait")
    ran: collections.Counter[int] = collections.Counter()
    down = threading.Event()

    async def handler(step: ClaimedStep) -> None:
        if len(ran) >= _STEPS // 4:
            await asyncio.to_thread(down.wait, 30)
        await asyncio.sleep(0.002)
        ran[step.task_index] += 1

    async def main() -> Any:
        db = await flowledger.connect_async(url, max_size=4, pool_timeout=15)
        try:
            worker = AsyncWorker(db, {"core.wait": handler}, concurrency=4, lease=_LEASE)
            running = asyncio.create_task(worker.run())
            await asyncio.to_thread(_restart_when, server, ran, _STEPS // 4, down)
            await asyncio.to_thread(_settle, url, run_id)
            worker.stop()
            return await asyncio.wait_for(running, 60)
        finally:
            await db.close()

    stats = asyncio.run(main())
    assert stats.outages >= 1
    _check_once(url, run_id, ran)


def test_a_database_away_at_start_or_at_stop_is_raised(
    restartable: tuple[EmbeddedServer, str],
) -> None:
    server, url = restartable
    _start_run(url, "core.hold")
    started = threading.Event()
    release = threading.Event()

    def hold(step: ClaimedStep) -> None:
        started.set()
        release.wait(30)

    async def hold_async(step: ClaimedStep) -> None:
        return None

    async def start_while_away() -> None:
        # Both pools open while the server is up; it goes away before run().
        adb = await flowledger.connect_async(url, max_size=2, pool_timeout=2)
        try:
            with flowledger.connect(url, max_size=2, pool_timeout=2) as db:
                await asyncio.to_thread(pg_ctl, server.pgdata, "stop")
                with pytest.raises(Unavailable):
                    Worker(db, {"core.hold": hold}).run()
                with pytest.raises(Unavailable):
                    await AsyncWorker(adb, {"core.hold": hold_async}).run()
        finally:
            await adb.close()

    try:
        asyncio.run(start_while_away())
    finally:
        pg_ctl(server.pgdata, "restart", "-l", str(server.pgdata / "restart.log"))
    assert not started.is_set()  # nothing was claimed

    # Away when stop() gives back the unstarted steps: raised by run().
    with flowledger.connect(url, max_size=4, pool_timeout=2) as db:
        worker = Worker(db, {"core.hold": hold}, concurrency=1, prefetch=4)
        raised: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            assert started.wait(30)
            pg_ctl(server.pgdata, "stop")
            worker.stop()
            release.set()
            thread.join(60)
        finally:
            pg_ctl(server.pgdata, "restart", "-l", str(server.pgdata / "restart.log"))
        assert not thread.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], Unavailable), raised
