-- The key that signs this database's pagination cursors: one row, made here from the
-- server's strong random source, so no two databases share a key unless told to.
-- depends: 0015_validate_orchestration_constraints
-- gen_random_uuid() draws 122 bits from pg_strong_random(); two of them give 244 random
-- bits. random() would not do: it is seeded per session and predictable.
CREATE TABLE cursor_key (
    -- Always true: the primary key on it allows exactly one row.
    singleton boolean PRIMARY KEY DEFAULT true,
    key bytea NOT NULL DEFAULT decode(
        replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cursor_key_singleton_check CHECK (singleton),
    CONSTRAINT cursor_key_key_check CHECK (octet_length(key) >= 32)
);

INSERT INTO cursor_key DEFAULT VALUES;
