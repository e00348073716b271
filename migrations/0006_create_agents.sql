-- Agents: client sessions and the typed key/value configuration store.
-- depends: 0005_create_actions

CREATE TABLE sessions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    client_id text NOT NULL,
    user_id uuid,
    is_active boolean NOT NULL DEFAULT true,
    -- Stale-session cleanup deactivates active sessions whose heartbeat is old.
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT sessions_client_id_check CHECK (length(btrim(client_id)) > 0),
    CONSTRAINT sessions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT sessions_client_id_key UNIQUE (client_id)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- The stale-session sweep: active sessions by heartbeat age.
CREATE INDEX sessions_active_heartbeat_idx ON sessions (last_heartbeat) WHERE is_active;
-- Keyset pagination over active sessions.
CREATE INDEX sessions_active_created_idx ON sessions (created_at, id) WHERE is_active;

CREATE TRIGGER sessions_set_updated_at
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Compare-and-set writes go through version: UPDATE ... WHERE version = expected.
CREATE TABLE configurations (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: one per write
    version integer NOT NULL DEFAULT 1,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Dotted lowercase path: "scheduler.max_workers".
    CONSTRAINT configurations_key_check
        CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    CONSTRAINT configurations_version_check CHECK (version >= 1)
);

-- Prefix listings (key LIKE 'scheduler.%') whatever the database collation;
-- the primary key serves them only under the C collation.
CREATE INDEX configurations_key_pattern_idx ON configurations (key text_pattern_ops);

CREATE TRIGGER configurations_set_updated_at
    BEFORE UPDATE ON configurations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
