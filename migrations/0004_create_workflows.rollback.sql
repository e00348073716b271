-- Drop workflows, their versions and stages, and the versioning functions.
-- squawk-ignore-file ban-drop-table, ban-drop-function -- undoing 0004 means dropping what it created

DROP TABLE workflow_stages;
DROP TABLE workflow_versions;
DROP TABLE workflows;
DROP FUNCTION bump_workflow_version();
DROP FUNCTION record_workflow_version();
