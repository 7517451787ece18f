-- The audit log as a product (issue 5).

-- `events(filter: {userId})` finds a user's factors from the event that created them: the
-- owner is fixed at enrolment, so the log itself answers exactly, with no read model between.
CREATE INDEX events_enrolled_user ON events ((payload->'Enrolled'->>'user_id'))
    WHERE aggregate_type = 'Factor' AND event_type = 'Enrolled';

-- The hash chain over the log, extended by the sealer (projections/src/seal.rs):
-- hash_n = SHA-256(hash_{n-1} || canonical(event_n)), n in tailing order.
CREATE TABLE log_seal
(
    n         bigint PRIMARY KEY,
    tx_id     bigint NOT NULL,
    position  bigint NOT NULL,
    hash      text   NOT NULL,
    sealed_at text   NOT NULL
);
CREATE UNIQUE INDEX log_seal_cursor ON log_seal (tx_id, position);

CREATE FUNCTION log_seal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the log seal is append-only';
END $$;
CREATE TRIGGER log_seal_append_only BEFORE UPDATE OR DELETE ON log_seal
    FOR EACH ROW EXECUTE FUNCTION log_seal_append_only();
CREATE TRIGGER log_seal_no_truncate BEFORE TRUNCATE ON log_seal
    FOR EACH STATEMENT EXECUTE FUNCTION log_seal_append_only();

