-- The audit log as a product (issue 5).

-- `events(filter: {userId})` finds a user's factors from the event that created them: the
-- owner is fixed at enrolment, so the log itself answers exactly, with no read model between.
CREATE INDEX events_enrolled_user ON events (json_extract(payload, '$.Enrolled.user_id'))
    WHERE aggregate_type = 'Factor' AND event_type = 'Enrolled';

-- The hash chain over the log, extended by the sealer (projections/src/seal.rs):
-- hash_n = SHA-256(hash_{n-1} || canonical(event_n)), n in tailing order.
CREATE TABLE log_seal
(
    n         integer PRIMARY KEY,
    tx_id     integer NOT NULL,
    position  integer NOT NULL,
    hash      text    NOT NULL,
    sealed_at text    NOT NULL
) STRICT;
CREATE UNIQUE INDEX log_seal_cursor ON log_seal (tx_id, position);

CREATE TRIGGER log_seal_append_only_update BEFORE UPDATE ON log_seal
BEGIN
    SELECT RAISE(ABORT, 'the log seal is append-only');
END;
CREATE TRIGGER log_seal_append_only_delete BEFORE DELETE ON log_seal
BEGIN
    SELECT RAISE(ABORT, 'the log seal is append-only');
END;
