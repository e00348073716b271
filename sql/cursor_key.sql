-- The key of this database's pagination cursors, read once when a Database opens.

-- name: get_cursor_key
-- The one key row that migration 0016 created.
-- plan: seqscan-ok (the table holds one row)
-- returns: scalar
SELECT key
  FROM cursor_key;
