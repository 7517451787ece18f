-- SMS and e-mail factors: where their codes go (contact data, shown to the owner). Rows of
-- older factors are TOTP and have none, so no rebuild is needed.
ALTER TABLE factors_v1 ADD COLUMN destination text;
