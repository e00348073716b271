-- Outbox: events written in the transaction of the change they announce, drained by a relay.

-- name: insert_outbox_event
-- Append one event, and send the relay its wake-up hint. NOTIFY folds identical
-- notifications of one transaction into one, so a transaction appending many events
-- still wakes the relay once; polling remains the source of truth.
-- returns: one
-- record: events.OutboxEvent
WITH inserted AS (
    INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    VALUES (%(aggregate_type)s::text, %(aggregate_id)s::uuid, %(event_type)s::text,
            %(payload)s::jsonb)
    RETURNING id, aggregate_type, aggregate_id, event_type, payload, created_at,
              available_at, published_at, attempts, last_error
), hint AS (
    SELECT pg_notify('flowledger_outbox', '') AS sent
)
SELECT inserted.id, inserted.aggregate_type, inserted.aggregate_id, inserted.event_type,
       inserted.payload, inserted.created_at, inserted.available_at, inserted.published_at,
       inserted.attempts, inserted.last_error
  FROM inserted CROSS JOIN hint;

-- name: claim_outbox_events
-- Lock a batch of due, unpublished events, oldest first, skipping those another relay holds.
-- plan: index outbox_unpublished_idx
-- returns: many
-- record: events.OutboxEvent
SELECT id, aggregate_type, aggregate_id, event_type, payload, created_at, available_at,
       published_at, attempts, last_error
  FROM outbox
 WHERE published_at IS NULL AND available_at <= now()
 ORDER BY available_at, id
 LIMIT %(batch)s::int
   FOR UPDATE SKIP LOCKED;

-- name: publish_outbox_events
-- Mark events delivered.
-- plan: index outbox_pkey, outbox_unpublished_idx
-- returns: rowcount
UPDATE outbox
   SET published_at = now(), attempts = attempts + 1, last_error = NULL
 WHERE id = ANY(%(ids)s::uuid[]) AND published_at IS NULL;

-- name: record_outbox_failure
-- Record a failed delivery and push the events back: 2^attempts seconds, capped.
-- plan: index outbox_pkey, outbox_unpublished_idx
-- returns: rowcount
UPDATE outbox
   SET attempts = attempts + 1,
       last_error = %(error)s::text,
       available_at = now() + make_interval(
           secs => least(%(max_backoff_seconds)s::float8, power(2, attempts)::float8))
 WHERE id = ANY(%(ids)s::uuid[]) AND published_at IS NULL;

-- name: list_outbox_events_by_aggregate
-- The events of one aggregate, oldest first.
-- plan: index outbox_aggregate_idx
-- returns: many
-- record: events.OutboxEvent
SELECT id, aggregate_type, aggregate_id, event_type, payload, created_at, available_at,
       published_at, attempts, last_error
  FROM outbox
 WHERE aggregate_type = %(aggregate_type)s::text AND aggregate_id = %(aggregate_id)s::uuid
 ORDER BY created_at, id;

-- name: prune_outbox_events
-- Delete up to one batch of events published before the cutoff, oldest first.
-- plan: index outbox_published_idx
-- prepare: never (a batch of a retention pass: its generic plan, blind to the batch size, joins the whole primary key)
-- returns: rowcount
DELETE FROM outbox
 WHERE id IN (
     SELECT id
       FROM outbox
      WHERE published_at IS NOT NULL AND published_at < %(cutoff)s::timestamptz
      ORDER BY published_at
      LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED
 );
