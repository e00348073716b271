-- Identity: users and their API keys.
-- depends: 0001_create_functions

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- Uniqueness is case-insensitive: see users_email_key below.
    email text NOT NULL,
    display_name text NOT NULL,
    role text NOT NULL DEFAULT 'developer',
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_check CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    CONSTRAINT users_display_name_check CHECK (length(btrim(display_name)) > 0),
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'developer', 'viewer'))
);

-- An expression index, not a constraint: UNIQUE constraints cannot be on
-- lower(email). Lookups must use lower(email) = lower(%(email)s) to hit it.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Only a hash of the secret is stored; the public prefix finds the row, then
-- the caller compares hashes. last_used_at is written lazily (at most every
-- few minutes per key), not on every request.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    user_id uuid NOT NULL,
    name text NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT api_keys_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT api_keys_prefix_check CHECK (prefix ~ '^[A-Za-z0-9_]{8,32}$'),
    -- SHA-256 (or HMAC-SHA-256) digest of the secret.
    CONSTRAINT api_keys_secret_hash_check CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT api_keys_scopes_check CHECK (array_position(scopes, NULL) IS NULL),
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    -- Also the index of api_keys_user_id_fkey (leading column).
    CONSTRAINT api_keys_user_id_name_key UNIQUE (user_id, name)
);

CREATE TRIGGER api_keys_set_updated_at
    BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
