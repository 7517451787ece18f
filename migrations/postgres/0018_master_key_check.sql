-- Which master key the store's sealed secrets are under: the key's id and an HMAC of a fixed
-- label under it, recorded on first start. Every start compares its key against this row and
-- refuses a key that does not match, rather than sealing new secrets under it while every
-- old one stays unreadable. No key material is stored.
CREATE TABLE master_key_check
(
    key_id      text PRIMARY KEY,
    mac         text NOT NULL,
    recorded_at text NOT NULL
);
