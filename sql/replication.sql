-- Read replicas: where the primary's WAL stands after a write, and how far a standby is
-- behind. See README.md, "Read replicas".

-- name: select_wal_position
-- The primary's WAL insert position, taken once a write committed: a standby that has
-- replayed up to it holds that write. The insert position rather than pg_current_wal_lsn()
-- (the write position): with synchronous_commit = off a commit returns before its WAL is
-- written, so the write position may still lie before the commit record. When the last
-- record ended exactly at a page boundary, the insert position lies past the next page's
-- header (24 bytes, 40 at a segment's start), where no record exists yet: a standby
-- replays up to the boundary only, so the boundary is returned.
-- returns: scalar
WITH wal AS (
  SELECT pg_current_wal_insert_lsn() AS lsn,
         pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS bytes,
         current_setting('wal_block_size')::numeric AS page,
         pg_size_bytes(current_setting('wal_segment_size')) AS segment
)
SELECT CASE WHEN bytes % segment = 40 THEN lsn - 40
            WHEN bytes % page = 24 THEN lsn - 24
            ELSE lsn
       END::text
  FROM wal;

-- name: stats_replica_status
-- Whether the server is a standby, its lag and what it replayed. A standby with a running
-- WAL receiver that replayed everything it received is caught up: lag 0, however old its
-- last replayed transaction (an idle primary sends nothing new). Otherwise the lag is the
-- age of the last transaction it replayed (commit time on the primary, NULL when none was
-- replayed since it started). The receiver's row is visible to every role (its details
-- are not), so no monitoring privilege is needed.
-- returns: one
-- record: replication.ReplicaStatus
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()
             AND EXISTS (SELECT FROM pg_stat_wal_receiver)
            THEN 0.0::float8
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
       END AS lag_seconds,
       pg_last_wal_replay_lsn()::text AS replayed;
