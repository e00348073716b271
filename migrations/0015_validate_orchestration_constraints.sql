-- Validate the constraints 0012 added NOT VALID. VALIDATE CONSTRAINT takes a SHARE UPDATE
-- EXCLUSIVE lock: claims, completions and starts go on while existing rows are checked.
ALTER TABLE workflow_executions VALIDATE CONSTRAINT workflow_executions_parent_step_id_fkey;
ALTER TABLE workflow_executions VALIDATE CONSTRAINT workflow_executions_parent_step_check;
ALTER TABLE execution_steps VALIDATE CONSTRAINT execution_steps_version_stage_id_fkey;
ALTER TABLE execution_steps VALIDATE CONSTRAINT execution_steps_status_check;
