-- Engine metrics for dashboards and scrapers (db.metrics(), `flowledger stats`): each
-- query reads an index (or the planner's statistics), never a whole table.

-- name: stats_engine_steps
-- The live step queue: queued steps due now and delayed (a retry backoff, a future
-- available_at), the age of the oldest due one, running steps, and those whose lease has
-- expired and that no reaper pass has requeued yet.
-- plan: index execution_steps_queue_claim_idx, execution_steps_lease_expiry_idx
-- returns: one
-- record: metrics.StepQueue
SELECT (SELECT count(*) FROM execution_steps
         WHERE status = 'queued' AND available_at <= now()) AS due,
       (SELECT count(*) FROM execution_steps
         WHERE status = 'queued' AND available_at > now()) AS delayed,
       (SELECT extract(epoch FROM now() - min(available_at))::float8 FROM execution_steps
         WHERE status = 'queued' AND available_at <= now()) AS oldest_due_seconds,
       (SELECT count(*) FROM execution_steps
         WHERE status = 'running' AND lease_expires_at IS NOT NULL) AS running,
       (SELECT count(*) FROM execution_steps
         WHERE status = 'running' AND lease_expires_at < now()) AS leases_expired;

-- name: stats_engine_step_estimates
-- Steps per status as the planner's statistics see them (the table's row estimate times
-- the status column's most-common-value frequencies): no read of the table at all, so
-- exact only as of the last ANALYZE (autovacuum keeps it recent); a status too rare to be
-- among the column's most common values is missing.
-- plan: seqscan-ok (catalog views only)
-- returns: many
-- record: metrics.StatusCount
SELECT f.status, round(greatest(c.reltuples, 0) * f.freq)::bigint AS count
  FROM pg_class c
  JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = c.relname
                 AND s.attname = 'status'
 CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs)
       AS f(status, freq)
 WHERE c.oid = 'execution_steps'::regclass
 ORDER BY f.status;

-- name: stats_engine_executions
-- Executions per status (every status in `statuses`, zero included), exact: one range of
-- the status index per status, read index-only; with few workflows PostgreSQL 18 may
-- prefer a skip scan of the (workflow_id, status) index, as cheap.
-- plan: index workflow_executions_status_updated_idx, workflow_executions_workflow_status_idx
-- returns: many
-- record: metrics.StatusCount
SELECT s.status,
       (SELECT count(*) FROM workflow_executions e WHERE e.status = s.status) AS count
  FROM unnest(%(statuses)s::text[]) WITH ORDINALITY AS s(status, n)
 ORDER BY s.n;

-- name: stats_engine_outbox
-- Outbox events not yet published, and the age of the oldest.
-- plan: index outbox_unpublished_idx
-- returns: one
-- record: metrics.OutboxBacklog
SELECT count(*) AS backlog,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds
  FROM outbox
 WHERE published_at IS NULL;

-- name: stats_engine_tools
-- Per tool, over finished calls created in the last `window`: calls, failures, failure rate.
-- plan: index tool_executions_created_idx
-- returns: many
-- record: metrics.ToolFailures
SELECT tool_name,
       count(*) AS calls,
       count(*) FILTER (WHERE status = 'failed') AS failures,
       (count(*) FILTER (WHERE status = 'failed'))::float8 / count(*) AS failure_rate
  FROM tool_executions
 WHERE created_at >= now() - %(window)s::interval
   AND status <> 'running'
 GROUP BY tool_name
 ORDER BY tool_name;
