-- A validated constraint cannot be marked NOT VALID again, and need not be: rolling back
-- 0022 drops these constraints. This statement only records that nothing is undone.
SELECT 'nothing to undo: 0023 validated constraints of 0022';
