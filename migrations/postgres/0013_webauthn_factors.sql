-- WebAuthn factors: what a settings page shows of a passkey or security key (public data:
-- the credential id, the authenticator model's AAGUID, whether the key is synced). Older rows
-- are TOTP, SMS and e-mail factors and have none, so no rebuild is needed.
ALTER TABLE factors_v1 ADD COLUMN credential_id text;
ALTER TABLE factors_v1 ADD COLUMN aaguid text;
ALTER TABLE factors_v1 ADD COLUMN backed_up bigint;
