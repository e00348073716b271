-- Users: people (and service accounts) who own workflows and API keys.

-- name: insert_user
-- Create a user; a duplicate email, in any letter case, violates users_email_key.
-- returns: one
-- record: identity.User
INSERT INTO users (email, display_name, role, is_active)
VALUES (%(email)s::text, %(display_name)s::text, %(role)s::text, %(is_active)s::boolean)
RETURNING id, email, display_name, role, is_active, created_at, updated_at;

-- name: get_user_by_id
-- One user by id.
-- plan: index users_pkey
-- returns: one
-- record: identity.User
SELECT id, email, display_name, role, is_active, created_at, updated_at
  FROM users
 WHERE id = %(id)s::uuid;

-- name: get_user_by_email
-- One user by email, ignoring letter case (the expression must match users_email_key).
-- plan: index users_email_key
-- returns: one
-- record: identity.User
SELECT id, email, display_name, role, is_active, created_at, updated_at
  FROM users
 WHERE lower(email) = lower(%(email)s::text);

-- name: list_users
-- Users, newest first, optionally of one role and/or activity state; keyset-paginated
-- by (created_at, id).
-- plan: index users_created_idx
-- returns: many
-- record: identity.User
SELECT id, email, display_name, role, is_active, created_at, updated_at
  FROM users
 WHERE (%(role)s::text IS NULL OR role = %(role)s::text)
   AND (%(is_active)s::boolean IS NULL OR is_active = %(is_active)s::boolean)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: update_user
-- Change a user's display name, role and/or active flag; NULL keeps the stored value.
-- plan: index users_pkey
-- returns: one
-- record: identity.User
UPDATE users
   SET display_name = coalesce(%(display_name)s::text, display_name),
       role = coalesce(%(role)s::text, role),
       is_active = coalesce(%(is_active)s::boolean, is_active)
 WHERE id = %(id)s::uuid
RETURNING id, email, display_name, role, is_active, created_at, updated_at;

-- name: delete_user
-- Delete a user and (ON DELETE CASCADE) their API keys; fails while they own workflows.
-- plan: index users_pkey
-- returns: rowcount
DELETE FROM users
 WHERE id = %(id)s::uuid;
