-- Undo 0028 (the start_executions of the release before reads the stage snapshot itself).
DROP FUNCTION version_stages_to_start(uuid, integer);
