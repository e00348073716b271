"""Claim + complete throughput: flowledger's `steps.claim` and `steps.complete` with 1, 2 and
4 worker threads, batches of 1 and 10, vs pgbench running flowledger's own claim and
complete statements (same SQL, same transaction shape, batch 1) with 1, 2 and 4 clients.
Each run drains freshly queued steps (queued untimed) for 3 seconds."""

from __future__ import annotations

import uuid

from flowledger.repositories.queries import get_queries
from measure import claim_complete_rate, pgbench, pgbench_sql

from ._context import Context
from ._plan import Direct, Plan, Rate

NAME = "claims"
TITLE = "claim + complete (steps/s)"
COMPARES = "steps.claim + steps.complete, 1/2/4 workers, batch 1/10, vs pgbench, same SQL"
MIN_SCALE = 1
WORKERS = (1, 2, 4)
SECONDS = 3.0
PGBENCH_DEFINES = {"limit": "1", "lease": "30s", "outputs": "null", "worker_id": "pgbench"}


def setup(ctx: Context) -> Plan:
    """flowledger's runs (median of half --repeats each), then pgbench's (one each)."""
    row = ctx.psy.execute("SELECT id FROM workflows ORDER BY id LIMIT 1").fetchone()
    assert row
    workflow_id: uuid.UUID = row[0]
    samples = max(1, ctx.repeats // 2)
    direct: dict[str, Direct] = {}
    for batch in (1, 10):
        for workers in WORKERS:
            direct[f"flowledger, {workers} worker(s), batch {batch}"] = Direct(
                _flowledger(ctx, workflow_id, workers, batch),
                samples,
                announce=f"claims {workers}w b{batch}: {{:,.0f}} steps/s",
            )
    script = _claim_complete_script()
    for clients in WORKERS:
        direct[f"pgbench, same SQL, {clients} client(s), batch 1"] = Direct(
            _pgbench(ctx, workflow_id, script, clients), 1
        )
    return Plan(direct=direct)


def _flowledger(ctx: Context, workflow_id: uuid.UUID, workers: int, batch: int) -> Rate:
    def rate() -> float:
        _queue_steps(ctx, workflow_id, 4_000)
        return claim_complete_rate(ctx.url, workers, batch, seconds=SECONDS)

    return rate


def _pgbench(ctx: Context, workflow_id: uuid.UUID, script: str, clients: int) -> Rate:
    def rate() -> float:
        _queue_steps(ctx, workflow_id, 20_000)
        return pgbench(ctx.url, script, clients=clients, seconds=3, defines=PGBENCH_DEFINES)

    return rate


def _claim_complete_script() -> str:
    """flowledger's own claim and complete statements as a pgbench script (batch 1)."""
    queries = get_queries()

    def sql(name: str) -> str:
        return pgbench_sql(queries[name].text)

    return "\n".join(
        [
            # Every queue, as steps.claim() without queues=.
            sql("claim_steps").replace(":queues::text[]", "NULL::text[]") + " \\gset",
            "BEGIN;",
            sql("lock_step_executions").replace(":ids", "ARRAY[:id]") + ";",
            sql("complete_steps")
            .replace(":ids", "ARRAY[:id]")
            .replace(":attempts", "ARRAY[:attempt]")
            .replace(":outputs", "ARRAY[:outputs]")
            + ";",
            sql("finish_executions_if_settled").replace(":ids", "ARRAY[:execution_id]") + ";",
            "COMMIT;",
            "",
        ]
    )


def _queue_steps(ctx: Context, workflow_id: uuid.UUID, n: int) -> None:
    """Cancel what is left queued or running, then queue n fresh steps (10 per execution)."""
    with ctx.psy.transaction():
        ctx.psy.execute(
            "UPDATE execution_steps SET status = 'cancelled', lease_owner = NULL,"
            " lease_expires_at = NULL WHERE status IN ('queued', 'running')"
        )
        ctx.psy.execute(
            """WITH ex AS (
                 INSERT INTO workflow_executions
                        (workflow_id, workflow_version, status, started_at)
                 SELECT %(w)s, 1, 'running', now() FROM generate_series(1, %(n)s / 10)
                 RETURNING id)
               INSERT INTO execution_steps
                      (execution_id, task_name, task_index, status, max_attempts)
               SELECT ex.id, 'bench', i, 'queued', 3
                 FROM ex, generate_series(0, 9) AS i""",
            {"w": workflow_id, "n": n},
        )
