-- Packs: the catalog's namespaces; each pack provides actions "<pack ref>.<name>".

-- name: insert_pack
-- Create a pack; a duplicate ref violates packs_ref_key.
-- returns: one
-- record: catalog.Pack
INSERT INTO packs (ref, label, description, version)
VALUES (%(ref)s::text, %(label)s::text, %(description)s::text, %(version)s::text)
RETURNING id, ref, label, description, version, created_at, updated_at;

-- name: get_pack_by_id
-- One pack by id.
-- plan: index packs_pkey
-- returns: one
-- record: catalog.Pack
SELECT id, ref, label, description, version, created_at, updated_at
  FROM packs
 WHERE id = %(id)s::uuid;

-- name: get_pack_by_ref
-- One pack by ref.
-- plan: index packs_ref_key
-- returns: one
-- record: catalog.Pack
SELECT id, ref, label, description, version, created_at, updated_at
  FROM packs
 WHERE ref = %(ref)s::text;

-- name: list_packs
-- Packs in ref order, keyset-paginated by ref (unique, so no tie-breaker is needed).
-- The first page starts after '', below every ref packs_ref_check allows: unlike
-- "after IS NULL OR ref > after", this stays an index bound in a generic (prepared)
-- plan, so a deep page costs what the first one does.
-- plan: index packs_ref_key
-- returns: many
-- record: catalog.Pack
SELECT id, ref, label, description, version, created_at, updated_at
  FROM packs
 WHERE ref > coalesce(%(after_ref)s::text, '')
 ORDER BY ref
 LIMIT %(limit)s::int + 1;

-- name: update_pack
-- Change a pack's label, description and/or version; NULL keeps the stored value.
-- plan: index packs_pkey
-- returns: one
-- record: catalog.Pack
UPDATE packs
   SET label = coalesce(%(label)s::text, label),
       description = coalesce(%(description)s::text, description),
       version = coalesce(%(version)s::text, version)
 WHERE id = %(id)s::uuid
RETURNING id, ref, label, description, version, created_at, updated_at;

-- name: delete_pack
-- Delete a pack and (ON DELETE CASCADE) its actions; its workflows lose their pack.
-- plan: index packs_pkey
-- returns: rowcount
DELETE FROM packs
 WHERE id = %(id)s::uuid;
