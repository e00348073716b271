-- API keys: the public prefix finds a key, the SHA-256 of the secret proves it.

-- name: insert_api_key
-- Store a new key: its public prefix and the hash of its secret, never the secret.
-- returns: one
-- record: identity.ApiKey
INSERT INTO api_keys (user_id, name, prefix, secret_hash, scopes, expires_at)
VALUES (%(user_id)s::uuid, %(name)s::text, %(prefix)s::text, %(secret_hash)s::bytea,
        %(scopes)s::text[], %(expires_at)s::timestamptz)
RETURNING id, user_id, name, prefix, scopes, expires_at, revoked_at, last_used_at,
          created_at, updated_at;

-- name: get_api_key_by_id
-- One key by id (without its hash).
-- plan: index api_keys_pkey
-- returns: one
-- record: identity.ApiKey
SELECT id, user_id, name, prefix, scopes, expires_at, revoked_at, last_used_at,
       created_at, updated_at
  FROM api_keys
 WHERE id = %(id)s::uuid;

-- name: get_api_key_credential_by_prefix
-- The key with this prefix, its hash and its user, only while the key is usable: not
-- revoked, not expired (by the server's clock) and owned by an active user.
-- plan: index api_keys_prefix_key
-- returns: one
-- record: identity.ApiKeyCredential
SELECT k.id, k.user_id, k.name, k.prefix, k.scopes, k.expires_at, k.revoked_at,
       k.last_used_at, k.created_at, k.updated_at, k.secret_hash,
       u.email AS user_email, u.display_name AS user_display_name, u.role AS user_role,
       u.is_active AS user_is_active, u.created_at AS user_created_at,
       u.updated_at AS user_updated_at
  FROM api_keys AS k
  JOIN users AS u ON u.id = k.user_id
 WHERE k.prefix = %(prefix)s::text
   AND k.revoked_at IS NULL
   AND (k.expires_at IS NULL OR k.expires_at > now())
   AND u.is_active;

-- name: touch_api_key_last_used
-- Record a use of the key unless one was recorded within the interval, so that a key
-- used on every request does not write on every request; the key when it was written.
-- plan: index api_keys_pkey
-- returns: one
-- record: identity.ApiKey
UPDATE api_keys
   SET last_used_at = now()
 WHERE id = %(id)s::uuid
   AND (last_used_at IS NULL OR last_used_at < now() - %(interval)s::interval)
RETURNING id, user_id, name, prefix, scopes, expires_at, revoked_at, last_used_at,
          created_at, updated_at;

-- name: revoke_api_key
-- Revoke a key; revoking it again keeps the first revocation time (and updated_at).
-- plan: index api_keys_pkey
-- returns: one
-- record: identity.ApiKey
UPDATE api_keys
   SET revoked_at = coalesce(revoked_at, now())
 WHERE id = %(id)s::uuid
RETURNING id, user_id, name, prefix, scopes, expires_at, revoked_at, last_used_at,
          created_at, updated_at;

-- name: list_api_keys_by_user
-- Every key of one user, oldest first (without hashes).
-- plan: index api_keys_user_id_name_key
-- returns: many
-- record: identity.ApiKey
SELECT id, user_id, name, prefix, scopes, expires_at, revoked_at, last_used_at,
       created_at, updated_at
  FROM api_keys
 WHERE user_id = %(user_id)s::uuid
 ORDER BY created_at, id;
