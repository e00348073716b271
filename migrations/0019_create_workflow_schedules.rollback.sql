-- Drop the schedule state of scheduled workflows and the triggers that keep it.
-- squawk-ignore-file ban-drop-table, ban-drop-function -- undoing 0019 means dropping what it created

DROP TRIGGER workflows_schedule_on_update ON workflows;
DROP TRIGGER workflows_schedule_on_insert ON workflows;
DROP FUNCTION sync_workflow_schedule();
DROP TABLE workflow_schedules;
