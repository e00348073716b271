-- Drop tasks and their attachment to workflows.
-- squawk-ignore-file ban-drop-table -- undoing 0018 means dropping what it created

DROP TABLE workflow_tasks;
DROP TABLE tasks;
