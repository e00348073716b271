-- Drop memory items, modules, their membership and context packs.
-- squawk-ignore-file ban-drop-table, ban-drop-function -- undoing 0009 means dropping what it created

DROP TABLE memory_context_packs;
DROP TABLE memory_module_items;
DROP TABLE memory_context_modules;
DROP TABLE memory_items;
DROP FUNCTION check_memory_item_transition();
