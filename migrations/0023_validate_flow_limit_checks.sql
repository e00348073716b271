-- Validate the CHECKs 0022 added NOT VALID. VALIDATE CONSTRAINT takes a SHARE UPDATE
-- EXCLUSIVE lock: claims, completions, starts and stage edits go on while existing rows
-- are checked (0022 itself held its ACCESS EXCLUSIVE locks only for instant changes).
-- depends: 0022_add_flow_limits
ALTER TABLE workflow_stages VALIDATE CONSTRAINT workflow_stages_concurrency_check;
ALTER TABLE workflow_stages VALIDATE CONSTRAINT workflow_stages_rate_limit_check;
ALTER TABLE execution_steps VALIDATE CONSTRAINT execution_steps_concurrency_check;
ALTER TABLE execution_steps VALIDATE CONSTRAINT execution_steps_rate_limit_check;
