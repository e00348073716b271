-- Undo 0027: the SQL function of 0001 on every server version.
CREATE OR REPLACE FUNCTION uuid_generate_v7() RETURNS uuid
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
