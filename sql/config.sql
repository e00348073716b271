-- Queries of the configuration store: dotted keys to JSON values, compare-and-set writes.

-- name: get_configuration
-- One configuration entry by key.
-- plan: index configurations_pkey
-- returns: one
-- record: agents.Configuration
SELECT key, value, version, description, created_at, updated_at
  FROM configurations
 WHERE key = %(key)s::text;

-- name: upsert_configuration
-- Writes a value whatever the entry's version: inserts at version 1 or bumps the
-- version; a NULL description keeps the stored one.
-- returns: one
-- record: agents.Configuration
INSERT INTO configurations AS c (key, value, description)
VALUES (%(key)s::text, %(value)s::jsonb, coalesce(%(description)s::text, ''))
    ON CONFLICT (key) DO UPDATE
   SET value = EXCLUDED.value,
       version = c.version + 1,
       description = coalesce(%(description)s::text, c.description)
RETURNING key, value, version, description, created_at, updated_at;

-- name: update_configuration_if_version
-- Compare-and-set: writes the value only when the entry is at the expected version.
-- plan: index configurations_pkey
-- returns: one
-- record: agents.Configuration
UPDATE configurations
   SET value = %(value)s::jsonb,
       version = version + 1,
       description = coalesce(%(description)s::text, description)
 WHERE key = %(key)s::text
   AND version = %(expected_version)s::int
RETURNING key, value, version, description, created_at, updated_at;

-- name: delete_configuration
-- Deletes an entry, only at the expected version when one is given.
-- plan: index configurations_pkey
-- returns: rowcount
DELETE FROM configurations
 WHERE key = %(key)s::text
   AND (%(expected_version)s::int IS NULL OR version = %(expected_version)s::int);

-- name: list_configurations_by_prefix
-- Entries whose key starts with a prefix, by key in byte order. The range bounds
-- (prefix, prefix || '~') stay indexable as parameters, unlike a LIKE pattern; they
-- are exact because keys hold only [a-z0-9_.], all below '~'; starts_with re-checks.
-- plan: index configurations_key_pattern_idx
-- returns: many
-- record: agents.Configuration
SELECT key, value, version, description, created_at, updated_at
  FROM configurations
 WHERE key ~>=~ %(prefix)s::text
   AND key ~<~ (%(prefix)s::text || '~')
   AND starts_with(key, %(prefix)s::text)
 ORDER BY key COLLATE "C";
