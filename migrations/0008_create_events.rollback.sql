-- Drop the outbox.
-- squawk-ignore-file ban-drop-table -- undoing 0008 means dropping what it created

DROP TABLE outbox;
