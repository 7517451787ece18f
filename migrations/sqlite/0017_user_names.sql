-- First and last names in the user's profile (User events Registered and ProfileUpdated 2.0;
-- the Okta-compatible API's profile.firstName and profile.lastName). No earlier event has
-- names, so existing rows are right with NULL and nothing needs rebuilding.
ALTER TABLE users_v1 ADD COLUMN first_name text;
ALTER TABLE users_v1 ADD COLUMN last_name text;
