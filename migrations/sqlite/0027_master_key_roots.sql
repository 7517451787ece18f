-- After a master-key rotation: the key the store was created with (its root, which the keyed
-- hashes of API keys and codes and the token-signing keys are derived from, and which cannot
-- change without invalidating them), sealed under each later master key, so the first key can
-- be retired once no secret needs it. `key_id` is the sealing key's id; `sealed` is AES-GCM
-- JSON ({key_id, nonce, ciphertext}), never the key in the clear.
CREATE TABLE master_key_roots
(
    key_id      text PRIMARY KEY,
    sealed      text NOT NULL,
    recorded_at text NOT NULL
);
