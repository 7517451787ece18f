-- State of the security-alert reactor, written with its checkpoint in one transaction.
-- Which user owns a factor (factor events carry only the factor id).
CREATE TABLE alert_factor_owners
(
    factor_id text PRIMARY KEY,
    user_id   text NOT NULL
);

-- Recent failed proofs per user, for the "N failures within the window" rule.
CREATE TABLE alert_failures
(
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       integer NOT NULL,
    event_type     text   NOT NULL,
    user_id        text   NOT NULL,
    at             text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX alert_failures_user ON alert_failures (user_id, at);

-- Raised alerts, as the API shows them.
CREATE TABLE security_alerts_v1
(
    id              text PRIMARY KEY,
    user_id         text NOT NULL,
    kind            text NOT NULL,
    reason          text NOT NULL,
    caused_by       text NOT NULL,
    raised_at       text NOT NULL,
    acknowledged_at text,
    acknowledged_by text
);
CREATE INDEX security_alerts_v1_user ON security_alerts_v1 (user_id, raised_at, id);
CREATE INDEX security_alerts_v1_raised ON security_alerts_v1 (raised_at, id);

-- Transactional outbox: one row per alert and channel, drained by the delivery worker with
-- retries; a row is enqueued in the transaction that raises the alert, so none is lost.
CREATE TABLE alert_deliveries
(
    alert_id        text   NOT NULL,
    channel         text   NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at text   NOT NULL,
    delivered_at    text,
    last_error      text,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (delivered_at, next_attempt_at);
