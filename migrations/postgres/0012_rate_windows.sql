-- Fixed-window counters for abuse limits (step-up starts per user, …): one row per key, the
-- count of the current window. Not part of the log: a refused request writes only here.
CREATE TABLE rate_windows
(
    key          text   PRIMARY KEY,
    window_start text   NOT NULL,
    count        bigint NOT NULL
);
