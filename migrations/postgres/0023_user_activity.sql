-- A user's security activity (`User.activity`) reads the user's challenges and alerts beside
-- the factors: the owner is named in the event that creates each stream, as for factors.
CREATE INDEX events_issued_user ON events ((payload->'Issued'->>'user_id'))
    WHERE aggregate_type = 'Challenge' AND event_type = 'Issued';
CREATE INDEX events_alert_user ON events ((payload->'SecurityAlertRaised'->>'user_id'))
    WHERE aggregate_type = 'Alert' AND event_type = 'SecurityAlertRaised';
