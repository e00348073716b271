-- Drop users and their API keys.
-- squawk-ignore-file ban-drop-table -- undoing 0002 means dropping what it created

DROP TABLE api_keys;
DROP TABLE users;
