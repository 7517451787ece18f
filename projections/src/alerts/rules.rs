//! Pure alert rules.

use chrono::{DateTime, TimeDelta, Utc};

/// When the failure-count rule fires.
#[derive(Clone, Copy, Debug)]
pub struct FailureRule {
    /// Failures within the window that make an incident (`TESSERA_ALERT_THRESHOLD`).
    pub threshold: usize,
    /// The window (`TESSERA_ALERT_WINDOW_SECONDS`).
    pub window: TimeDelta,
}

impl Default for FailureRule {
    fn default() -> Self {
        Self {
            threshold: 3,
            window: TimeDelta::seconds(600),
        }
    }
}

impl FailureRule {
    /// Whether a failure at `now`, with `in_window` failures of the user (this one included)
    /// since `now - window`, raises an alert, given when the last such alert was raised. One
    /// incident raises once: further failures inside the window of the last alert do not.
    pub fn fires(
        &self,
        in_window: usize,
        now: DateTime<Utc>,
        last_alert: Option<DateTime<Utc>>,
    ) -> bool {
        in_window >= self.threshold.max(1) && last_alert.is_none_or(|t| now - t >= self.window)
    }

    /// The start of the window ending at `now`.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_incident() {
        let rule = FailureRule::default();
        let t = DateTime::from_timestamp(10_000, 0).unwrap();
        let m = TimeDelta::minutes;
        let table = [
            (2, None, false),
            (3, None, true),
            (7, None, true),
            (4, Some(t - m(1)), false),
            (4, Some(t - m(9)), false),
            (3, Some(t - m(10)), true),
            (3, Some(t - m(30)), true),
        ];
        for (n, last, want) in table {
            assert_eq!(rule.fires(n, t, last), want, "{n} {last:?}");
        }
        let zero = FailureRule {
            threshold: 0,
            ..rule
        };
        assert!(
            !zero.fires(0, t, None),
            "a threshold of 0 means 1, never 'always'"
        );
    }
}
