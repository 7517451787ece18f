-- The event log. Columns up to metadata are what sqlite-es writes (explicit column list).
-- SQLite serialises writers, so a sequence drawn inside the writing transaction is in commit
-- order: global_seq is filled by the trigger below, not by rowid (VACUUM may renumber rowids).
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    global_seq     integer,
    recorded_at    text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE UNIQUE INDEX events_global_seq ON events (global_seq);

CREATE TRIGGER events_assign_global_seq AFTER INSERT ON events
BEGIN
    UPDATE events SET global_seq = (SELECT IFNULL(MAX(global_seq), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;

-- Append-only, but for the one update above that assigns the position.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
WHEN OLD.global_seq IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;
