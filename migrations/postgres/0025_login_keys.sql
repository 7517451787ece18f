-- Logins are enforced with the PRECIS UsernameCaseMapped profile (issue 17, L5): each user's
-- row gets the enforced form of its login (`login_key`, NULL when the rules refuse a login
-- registered before them), so a login typed in another width, case or composition finds a
-- user registered before the rules, whose id derives from the old trimmed, lower-cased form.
-- Not unique: two users registered before may enforce to one key (the older is found).
-- The key is computed in Rust, so the read models are rebuilt from the log: the checkpoint is
-- reset and the tables emptied.
ALTER TABLE users_v1 ADD COLUMN login_key text;
CREATE INDEX users_v1_by_login_key ON users_v1 (login_key, created_at, id);
DELETE FROM users_v1;
DELETE FROM factors_v1;
DELETE FROM projection_checkpoints WHERE name = 'read_models_v1';
