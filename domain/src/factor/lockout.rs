//! Pure lockout arithmetic.

use chrono::{DateTime, TimeDelta, Utc};

/// What one more consecutive failure means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterFailure {
    /// The consecutive-failure count including this one.
    pub consecutive_failures: u32,
    /// Set when this failure reaches the threshold: locked until then.
    pub lock_until: Option<DateTime<Utc>>,
}

/// Counts a failure against `threshold`; the failure that reaches it locks for `duration`.
pub fn after_failure(
    consecutive_before: u32,
    threshold: u32,
    duration: TimeDelta,
    now: DateTime<Utc>,
) -> AfterFailure {
    let consecutive_failures = consecutive_before.saturating_add(1);
    AfterFailure {
        consecutive_failures,
        lock_until: (threshold > 0 && consecutive_failures >= threshold).then(|| now + duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_exactly_at_the_threshold() {
        let now = DateTime::from_timestamp(0, 0).unwrap();
        let d = TimeDelta::seconds(900);
        for (before, threshold, locks) in [
            (0, 5, false),
            (3, 5, false),
            (4, 5, true),
            (9, 5, true),
            (0, 1, true),
            (7, 0, false),
        ] {
            let r = after_failure(before, threshold, d, now);
            assert_eq!(r.consecutive_failures, before + 1);
            assert_eq!(r.lock_until, locks.then(|| now + d), "{before}/{threshold}");
        }
    }
}
