-- Drop the shared functions (every table using them is already gone).
-- squawk-ignore-file ban-drop-function -- undoing 0001 means dropping what it created

DROP FUNCTION reject_update();
DROP FUNCTION set_updated_at();
DROP FUNCTION uuid_generate_v7();
