-- API keys get a scope, an optional expiry and who minted or revoked them. The rows are written
-- by the use cases beside the `ApiKey` events (the events are the record, the row is what a
-- request's authentication reads); keys minted before this migration are admin keys.
ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN expires_at text;
ALTER TABLE api_keys ADD COLUMN created_by text;
ALTER TABLE api_keys ADD COLUMN revoked_by text;
