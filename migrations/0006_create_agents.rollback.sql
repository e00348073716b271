-- Drop sessions and configurations.
-- squawk-ignore-file ban-drop-table -- undoing 0006 means dropping what it created

DROP TABLE configurations;
DROP TABLE sessions;
