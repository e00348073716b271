-- Drop packs.
-- squawk-ignore-file ban-drop-table -- undoing 0003 means dropping what it created

DROP TABLE packs;
