-- Shared functions: UUIDv7 keys, the updated_at trigger, write-once rows.

CREATE FUNCTION uuid_generate_v7() RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    -- Time-ordered UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the
    -- version nibble, 12 bits of sub-millisecond fraction ("method 3": ids
    -- made by one backend sort in creation order at microsecond resolution),
    -- then the variant and 62 random bits of gen_random_uuid(), whose variant
    -- bits already are the RFC ones. gen_random_uuid() is core since
    -- PostgreSQL 13, so no extension is needed; the built-in uuidv7() of
    -- PostgreSQL 18 is not used because the schema also runs on 15.
    SELECT encode(
               overlay(uuid_send(gen_random_uuid())
                       PLACING int8send(((clock.us / 1000) << 16)
                                        | (7 << 12)
                                        | ((clock.us % 1000) * 4096 / 1000))
                       FROM 1 FOR 8),
               'hex')::uuid
      FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) AS clock
$$;

-- BEFORE UPDATE trigger of every mutable table: bump updated_at only when the
-- row really changed, so a no-op UPDATE keeps the timestamp. Trigger arguments
-- name columns to leave out of the comparison: stored generated columns are
-- still NULL in NEW while BEFORE triggers run and would make every update look
-- like a change.
CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_NARGS = 0 THEN
        IF NEW IS DISTINCT FROM OLD THEN
            NEW.updated_at := now();
        END IF;
    ELSIF (to_jsonb(NEW) - TG_ARGV) IS DISTINCT FROM (to_jsonb(OLD) - TG_ARGV) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- BEFORE UPDATE trigger of write-once tables. Raised as a check violation
-- named after the trigger, so callers map it like any other constraint.
CREATE FUNCTION reject_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME;
END;
$$;
