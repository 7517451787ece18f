-- Outgoing messages that carry a one-time code. A row is written before the request that
-- asked for the code is answered, and drained by the delivery worker with retries, so a crash
-- between the answer and the send delivers the message later instead of losing it. The body
-- is sealed with the AEAD (key id carried, the row's id as associated data) while it waits
-- and erased once the message is delivered or given up: a dump never shows a code.
CREATE TABLE message_outbox
(
    id              text   PRIMARY KEY,
    channel         text   NOT NULL,
    destination     text   NOT NULL,
    subject         text   NOT NULL,
    sealed_body     text,
    challenge_id    text   NOT NULL,
    factor_id       text   NOT NULL,
    metadata        text   NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_at text   NOT NULL,
    done_at         text,
    last_error      text
);
CREATE INDEX message_outbox_due ON message_outbox (done_at, next_attempt_at);
