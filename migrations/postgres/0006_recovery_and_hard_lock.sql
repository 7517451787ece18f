-- Recovery codes left and the user-level hard lock, on the users read model. The read models
-- are rebuilt from the log: the checkpoint is reset and the tables emptied.
ALTER TABLE users_v1 ADD COLUMN recovery_codes_remaining bigint NOT NULL DEFAULT 0;
ALTER TABLE users_v1 ADD COLUMN second_factor_locked bigint NOT NULL DEFAULT 0;
DELETE FROM users_v1;
DELETE FROM factors_v1;
DELETE FROM projection_checkpoints WHERE name = 'read_models_v1';
