-- When an alert's own user marked it seen (`markSecurityAlertSeen`): the user's "seen", kept
-- apart from `acknowledged_at`, which only the security team sets.
ALTER TABLE security_alerts_v1 ADD COLUMN seen_by_user_at text;
