-- One row per log consumer: where it has read up to, as the (tx_id, position) pair the tailer
-- orders by. The row is locked for the length of a batch, so consumers on several nodes take
-- turns instead of applying a batch twice.
CREATE TABLE projection_checkpoints
(
    name       text   PRIMARY KEY,
    tx_id      integer NOT NULL DEFAULT 0,
    position   integer NOT NULL DEFAULT 0,
    updated_at text
);

-- API keys: only a keyed hash of the secret part is stored.
CREATE TABLE api_keys
(
    id         text PRIMARY KEY,
    name       text NOT NULL,
    key_hash   text NOT NULL,
    created_at text NOT NULL,
    revoked_at text
);
