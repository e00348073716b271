-- Drop executions, steps, attempts, logs, tool calls and their trigger functions.
-- squawk-ignore-file ban-drop-table, ban-drop-function -- undoing 0007 means dropping what it created

DROP TABLE tool_executions;
DROP TABLE step_logs;
DROP TABLE step_attempts;
DROP TABLE execution_steps;
DROP TABLE workflow_executions;
DROP FUNCTION check_step_attempt_write_once();
DROP FUNCTION check_step_transition();
DROP FUNCTION check_execution_transition();
