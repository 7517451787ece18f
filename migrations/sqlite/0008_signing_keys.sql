-- Access-token signing keys. No key material is stored: generation N's Ed25519 key is derived
-- from the master key, so every node signs with the same keys. The newest generation signs;
-- an older one is published and accepted until tokens signed before its successor appeared
-- have expired.
CREATE TABLE signing_keys
(
    generation bigint PRIMARY KEY,
    kid        text   NOT NULL UNIQUE,
    algorithm  text   NOT NULL,
    created_at text   NOT NULL
);
