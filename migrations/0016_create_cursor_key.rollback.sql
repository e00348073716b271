-- Dropping the key invalidates every cursor issued with it.
DROP TABLE cursor_key;
