-- Queries of the memory aggregate: items, context modules with their ordered
-- membership, and immutable context packs.

-- ---------------------------------------------------------------
-- Items
-- ---------------------------------------------------------------

-- name: insert_memory_item
-- Creates an item, or returns the project's item with the same content hash
-- (raising its confidence to the larger of both when asked). ON CONFLICT DO UPDATE
-- locks and returns the existing row even under concurrent inserts; xmax is 0 only
-- on a row this statement inserted.
-- returns: one
-- record: memory.CreatedMemoryItem
INSERT INTO memory_items AS m
       (project, kind, content, content_hash, confidence, status, provenance, anchors,
        expires_at)
VALUES (%(project)s::text, %(kind)s::text, %(content)s::text, %(content_hash)s::bytea,
        %(confidence)s::float8, %(status)s::text, %(provenance)s::jsonb,
        %(anchors)s::text[], %(expires_at)s::timestamptz)
    ON CONFLICT (project, content_hash) DO UPDATE
   SET confidence = CASE WHEN %(raise_confidence)s::boolean
                         THEN greatest(m.confidence, EXCLUDED.confidence)
                         ELSE m.confidence
                    END
RETURNING id, project, kind, content, content_hash, confidence, status, provenance, anchors,
          access_count, last_accessed_at, expires_at, created_at, updated_at,
          (xmax = 0) AS created;

-- name: get_memory_item
-- One memory item by id.
-- plan: index memory_items_pkey
-- returns: one
-- record: memory.MemoryItem
SELECT id, project, kind, content, content_hash, confidence, status, provenance, anchors,
       access_count, last_accessed_at, expires_at, created_at, updated_at
  FROM memory_items
 WHERE id = %(id)s::uuid;

-- name: list_memory_items
-- One project's items, most trusted first (confidence, then newest), optionally
-- filtered; keyset-paginated on (confidence, created_at, id). The range of creation
-- times is half-open, created_from <= created_at < created_to.
-- plan: index memory_items_project_status_confidence_idx, memory_items_anchors_idx
-- returns: many
-- record: memory.MemoryItem
SELECT id, project, kind, content, content_hash, confidence, status, provenance, anchors,
       access_count, last_accessed_at, expires_at, created_at, updated_at
  FROM memory_items
 WHERE project = %(project)s::text
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
   AND (%(min_confidence)s::float8 IS NULL OR confidence >= %(min_confidence)s::float8)
   AND (%(anchor)s::text IS NULL OR anchors @> ARRAY[%(anchor)s::text])
   AND (%(created_from)s::timestamptz IS NULL
        OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_confidence)s::float8 IS NULL
        OR (confidence, created_at, id)
           < (%(after_confidence)s::float8, %(after_created_at)s::timestamptz,
              %(after_id)s::uuid))
 ORDER BY confidence DESC, created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: set_memory_item_status
-- Moves an item along its lifecycle; the transition trigger refuses illegal moves.
-- plan: index memory_items_pkey
-- returns: one
-- record: memory.MemoryItem
UPDATE memory_items
   SET status = %(status)s::text
 WHERE id = %(id)s::uuid
RETURNING id, project, kind, content, content_hash, confidence, status, provenance, anchors,
          access_count, last_accessed_at, expires_at, created_at, updated_at;

-- name: touch_memory_items
-- Counts one access of each listed item (a repeated id counts once).
-- plan: index memory_items_pkey
-- returns: rowcount
UPDATE memory_items
   SET access_count = access_count + 1,
       last_accessed_at = now()
 WHERE id = ANY(%(ids)s::uuid[]);

-- name: expire_memory_items
-- Deprecates the items whose expiry time has passed (at the given time, else now);
-- their ids, as one array.
-- plan: index memory_items_expires_idx
-- returns: scalar
WITH expired AS (
    UPDATE memory_items
       SET status = 'deprecated'
     WHERE expires_at IS NOT NULL
       AND expires_at <= coalesce(%(now)s::timestamptz, now())
       AND status <> 'deprecated'
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}')
  FROM expired;

-- ---------------------------------------------------------------
-- Context modules
-- ---------------------------------------------------------------

-- name: insert_memory_module
-- Creates a context module.
-- returns: one
-- record: memory.MemoryModule
INSERT INTO memory_context_modules (project, name, description, selectors, priority)
VALUES (%(project)s::text, %(name)s::text, %(description)s::text, %(selectors)s::jsonb,
        %(priority)s::int)
RETURNING id, project, name, description, selectors, priority, created_at, updated_at;

-- name: get_memory_module
-- One context module by id.
-- plan: index memory_context_modules_pkey
-- returns: one
-- record: memory.MemoryModule
SELECT id, project, name, description, selectors, priority, created_at, updated_at
  FROM memory_context_modules
 WHERE id = %(id)s::uuid;

-- name: list_memory_modules
-- A project's context modules, highest priority first, then by name.
-- plan: index memory_context_modules_project_name_key
-- returns: many
-- record: memory.MemoryModule
SELECT id, project, name, description, selectors, priority, created_at, updated_at
  FROM memory_context_modules
 WHERE project = %(project)s::text
 ORDER BY priority DESC, name, id;

-- name: update_memory_module
-- Changes the given fields of a module; a NULL parameter keeps the stored value.
-- plan: index memory_context_modules_pkey
-- returns: one
-- record: memory.MemoryModule
UPDATE memory_context_modules
   SET name = coalesce(%(name)s::text, name),
       description = coalesce(%(description)s::text, description),
       selectors = coalesce(%(selectors)s::jsonb, selectors),
       priority = coalesce(%(priority)s::int, priority)
 WHERE id = %(id)s::uuid
RETURNING id, project, name, description, selectors, priority, created_at, updated_at;

-- name: delete_memory_module
-- Deletes a module and its membership rows (the items stay).
-- plan: index memory_context_modules_pkey
-- returns: rowcount
DELETE FROM memory_context_modules
 WHERE id = %(id)s::uuid;

-- name: lock_memory_module
-- Locks a module against concurrent membership changes; its project.
-- plan: index memory_context_modules_pkey
-- returns: scalar
SELECT project
  FROM memory_context_modules
 WHERE id = %(id)s::uuid
   FOR NO KEY UPDATE;

-- name: count_memory_module_items
-- How many items a module holds (positions run from 0 to this count - 1).
-- plan: index memory_module_items_module_id_position_key
-- returns: scalar
SELECT count(*)::int
  FROM memory_module_items
 WHERE module_id = %(module_id)s::uuid;

-- name: shift_memory_module_items
-- Moves a module's items at or after a position by delta places (to open or close
-- a gap); the unique position constraint is deferrable, so collisions in the middle
-- of the statement are fine.
-- plan: index memory_module_items_module_id_position_key
-- returns: rowcount
UPDATE memory_module_items
   SET position = position + %(delta)s::int
 WHERE module_id = %(module_id)s::uuid
   AND position >= %(from_position)s::int;

-- name: add_memory_module_item
-- Puts an item into a module at a position.
-- returns: none
INSERT INTO memory_module_items (module_id, item_id, position)
VALUES (%(module_id)s::uuid, %(item_id)s::uuid, %(position)s::int);

-- name: remove_memory_module_item
-- Takes an item out of a module; the position it held.
-- plan: index memory_module_items_pkey
-- returns: scalar
DELETE FROM memory_module_items
 WHERE module_id = %(module_id)s::uuid
   AND item_id = %(item_id)s::uuid
RETURNING position;

-- name: reorder_memory_module_items
-- Gives a module's items the order of the list, in one statement. Changes nothing
-- unless every member is listed: then the rowcount is the module's size.
-- plan: index memory_module_items_pkey
-- returns: rowcount
UPDATE memory_module_items AS mi
   SET position = o.ordinality - 1
  FROM unnest(%(item_ids)s::uuid[]) WITH ORDINALITY AS o (item_id, ordinality)
 WHERE mi.module_id = %(module_id)s::uuid
   AND mi.item_id = o.item_id
   AND NOT EXISTS (SELECT 1
                     FROM memory_module_items AS other
                    WHERE other.module_id = %(module_id)s::uuid
                      AND other.item_id <> ALL(%(item_ids)s::uuid[]));

-- name: list_memory_module_items
-- The items of a module in membership order.
-- plan: index memory_module_items_module_id_position_key
-- returns: many
-- record: memory.MemoryItem
SELECT i.id, i.project, i.kind, i.content, i.content_hash, i.confidence, i.status,
       i.provenance, i.anchors, i.access_count, i.last_accessed_at, i.expires_at,
       i.created_at, i.updated_at
  FROM memory_module_items AS mi
  JOIN memory_items AS i ON i.id = mi.item_id
 WHERE mi.module_id = %(module_id)s::uuid
 ORDER BY mi.position;

-- ---------------------------------------------------------------
-- Context packs
-- ---------------------------------------------------------------

-- name: lock_memory_modules_for_pack
-- Share-locks the modules a pack is built from, so their membership holds still
-- while the pack is assembled; the modules found.
-- plan: index memory_context_modules_pkey
-- returns: many
-- record: memory.MemoryModule
SELECT id, project, name, description, selectors, priority, created_at, updated_at
  FROM memory_context_modules
 WHERE id = ANY(%(module_ids)s::uuid[])
   FOR SHARE;

-- name: list_memory_pack_candidates
-- The unexpired active and stable items of the given modules, each once (under the
-- module of highest priority, then first listed), in pack order: confidence first,
-- then module priority, module order and position. tokens = ceil(characters / 4).
-- plan: index memory_module_items_module_id_position_key
-- returns: many
-- record: memory.PackedItem
SELECT id, module_id, kind, content, confidence, tokens
  FROM (SELECT DISTINCT ON (i.id)
               i.id, m.id AS module_id, i.kind, i.content, i.confidence,
               ceil(length(i.content) / 4.0)::int AS tokens,
               m.priority,
               array_position(%(module_ids)s::uuid[], m.id) AS module_rank,
               mi.position
          FROM memory_context_modules AS m
          JOIN memory_module_items AS mi ON mi.module_id = m.id
          JOIN memory_items AS i ON i.id = mi.item_id
         WHERE m.id = ANY(%(module_ids)s::uuid[])
           AND i.project = %(project)s::text
           AND i.status IN ('active', 'stable')
           AND (i.expires_at IS NULL OR i.expires_at > now())
         ORDER BY i.id, m.priority DESC, module_rank, mi.position) AS candidate
 ORDER BY confidence DESC, priority DESC, module_rank, position, id;

-- name: insert_memory_pack
-- Records a built pack.
-- returns: one
-- record: memory.MemoryPack
INSERT INTO memory_context_packs (project, token_budget, token_count, module_ids, items)
VALUES (%(project)s::text, %(token_budget)s::int, %(token_count)s::int,
        %(module_ids)s::uuid[], %(items)s::jsonb)
RETURNING id, project, token_budget, token_count, module_ids, items, created_at;

-- name: get_memory_pack
-- One context pack by id.
-- plan: index memory_context_packs_pkey
-- returns: one
-- record: memory.MemoryPack
SELECT id, project, token_budget, token_count, module_ids, items, created_at
  FROM memory_context_packs
 WHERE id = %(id)s::uuid;

-- name: list_memory_packs
-- A project's packs, newest first, keyset-paginated on (created_at, id).
-- plan: index memory_context_packs_project_created_idx
-- returns: many
-- record: memory.MemoryPack
SELECT id, project, token_budget, token_count, module_ids, items, created_at
  FROM memory_context_packs
 WHERE project = %(project)s::text
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;
