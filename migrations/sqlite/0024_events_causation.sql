-- An event's causes and effects (`auditEvent`): the events one command wrote share its
-- `causation_id`, and an alert's names the event that tipped its rule, so both directions of
-- the chain are one index probe on this expression.
CREATE INDEX events_causation ON events (json_extract(metadata, '$.causation_id'));
