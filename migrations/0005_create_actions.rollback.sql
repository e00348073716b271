-- Drop actions.
-- squawk-ignore-file ban-drop-table -- undoing 0005 means dropping what it created

DROP TABLE actions;
