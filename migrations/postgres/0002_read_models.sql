-- Read models: built only from events, rebuildable by replaying the log. Timestamps are
-- RFC 3339 UTC text with fixed width, so they sort as text and read the same on both stores.
CREATE TABLE users_v1
(
    id           text   PRIMARY KEY,
    login        text   NOT NULL UNIQUE,
    email        text,
    phone_number text,
    display_name text,
    status       text   NOT NULL,
    created_at   text   NOT NULL,
    last_seq     bigint NOT NULL
);

CREATE TABLE factors_v1
(
    id               text   PRIMARY KEY,
    user_id          text   NOT NULL,
    factor_type      text   NOT NULL,
    status           text   NOT NULL,
    label            text,
    created_at       text   NOT NULL,
    expires_at       text,
    last_verified_at text,
    failed_attempts  bigint NOT NULL DEFAULT 0,
    locked_until     text,
    last_seq         bigint NOT NULL
);
CREATE INDEX factors_v1_user ON factors_v1 (user_id, id);
