-- Events: the transactional outbox.
-- depends: 0007_create_runs

CREATE TABLE outbox (
    -- Written in the same transaction as the change it announces; a relay
    -- drains it with FOR UPDATE SKIP LOCKED. No updated_at: a row changes
    -- only when the relay records an attempt or marks it published, and
    -- available_at / published_at already say when.
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    aggregate_type text NOT NULL,
    aggregate_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Next delivery attempt; pushed back after a failed publish.
    available_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    -- squawk-ignore prefer-bigint-over-int -- bounded: delivery attempts of one event
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    CONSTRAINT outbox_aggregate_type_check CHECK (length(btrim(aggregate_type)) > 0),
    -- "<aggregate>.<event>", e.g. "execution.completed".
    CONSTRAINT outbox_event_type_check CHECK (event_type ~ '^[a-z_]+\.[a-z_]+$'),
    CONSTRAINT outbox_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT outbox_attempts_check CHECK (attempts >= 0)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- What the relay polls: unpublished events that are due, oldest first.
CREATE INDEX outbox_unpublished_idx ON outbox (available_at, id) WHERE published_at IS NULL;
-- Retention: published events oldest first.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_aggregate_idx ON outbox (aggregate_type, aggregate_id);
