-- Queries of the sessions aggregate: client sessions and their heartbeats.

-- name: open_session
-- A new active session for a client; an inactive session of the same client is
-- reopened in place (fresh heartbeat, new user and metadata). No row when the
-- client already has an active session.
-- returns: one
-- record: agents.Session
INSERT INTO sessions AS s (client_id, user_id, metadata)
VALUES (%(client_id)s::text, %(user_id)s::uuid, %(metadata)s::jsonb)
    ON CONFLICT (client_id) DO UPDATE
   SET is_active = true,
       user_id = EXCLUDED.user_id,
       metadata = EXCLUDED.metadata,
       last_heartbeat = now()
 WHERE NOT s.is_active
RETURNING id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at;

-- name: get_session
-- One session by id.
-- plan: index sessions_pkey
-- returns: one
-- record: agents.Session
SELECT id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at
  FROM sessions
 WHERE id = %(id)s::uuid;

-- name: get_session_by_client
-- The session of one client.
-- plan: index sessions_client_id_key
-- returns: one
-- record: agents.Session
SELECT id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at
  FROM sessions
 WHERE client_id = %(client_id)s::text;

-- name: heartbeat_session
-- Records a heartbeat of an active session; no row when it is unknown or inactive.
-- plan: index sessions_pkey
-- returns: one
-- record: agents.Session
UPDATE sessions
   SET last_heartbeat = now()
 WHERE id = %(id)s::uuid
   AND is_active
RETURNING id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at;

-- name: close_session
-- Marks a session inactive (closing an inactive one changes nothing).
-- plan: index sessions_pkey
-- returns: one
-- record: agents.Session
UPDATE sessions
   SET is_active = false
 WHERE id = %(id)s::uuid
RETURNING id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at;

-- name: deactivate_stale_sessions
-- Deactivates every active session whose last heartbeat is older than the given age;
-- the ids of the sessions it deactivated, as one array.
-- plan: index sessions_active_heartbeat_idx
-- returns: scalar
WITH deactivated AS (
    UPDATE sessions
       SET is_active = false
     WHERE is_active
       AND last_heartbeat < now() - %(older_than)s::interval
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}')
  FROM deactivated;

-- name: list_active_sessions
-- Active sessions, newest first, keyset-paginated on (created_at, id).
-- plan: index sessions_active_created_idx
-- returns: many
-- record: agents.Session
SELECT id, client_id, user_id, is_active, last_heartbeat, metadata, created_at, updated_at
  FROM sessions
 WHERE is_active
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;
