//! The password-guessing throttle (`login` and self-service `setPassword`): consecutive wrong
//! passwords for one login are counted; a run of `threshold` of them throttles the login for
//! a while, twice as long for every further run, until a correct password resets it. Pure: the
//! `User` aggregate keeps this state for known users, the store's `login_throttle` table for
//! logins nobody registered, and both decide with these functions, so the two kinds of login
//! answer the same sequence.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// How the throttle reacts (`TESSERA_LOGIN_LOCKOUT_THRESHOLD`, `TESSERA_LOGIN_LOCKOUT_SECONDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive wrong passwords that throttle the login (0: never).
    pub threshold: u32,
    /// Length of the first throttle.
    pub base: TimeDelta,
    /// The longest throttle, however many runs came before.
    pub max: TimeDelta,
}

impl ThrottlePolicy {
    /// The longest a throttle lasts: 24 hours.
    pub const MAX: TimeDelta = TimeDelta::hours(24);

    /// The policy with `threshold` and a first throttle of `base_seconds`, capped at 24 h.
    pub fn new(threshold: u32, base_seconds: i64) -> Self {
        Self {
            threshold,
            base: TimeDelta::seconds(base_seconds.max(1)),
            max: Self::MAX,
        }
    }

    /// How long the throttle after `runs` earlier runs lasts: `base · 2^runs`, at most `max`.
    pub fn duration(&self, runs: u32) -> TimeDelta {
        let factor = 1_i32.checked_shl(runs.min(30)).unwrap_or(i32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Where a login stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    /// Wrong passwords since the last throttle began (or since the last success).
    pub failures: u32,
    /// Throttles since the last success.
    pub runs: u32,
    /// The end of the current (or last) throttle.
    pub until: Option<DateTime<Utc>>,
}

impl LoginThrottle {
    /// Whether nothing was counted since the last success: a login in this state needs no
    /// write when it succeeds.
    pub fn is_clear(&self) -> bool {
        *self == Self::default()
    }

    /// Whole seconds until a password will be checked again, if the login is throttled at
    /// `now` (at least 1).
    pub fn retry_after(&self, now: DateTime<Utc>) -> Option<i64> {
        self.until
            .filter(|until| *until > now)
            .map(|until| (until - now).num_seconds().max(1))
    }

    /// The state after one more wrong password at `now`, and the end of the throttle this
    /// failure starts, if it completes a run.
    pub fn after_failure(
        self,
        policy: &ThrottlePolicy,
        now: DateTime<Utc>,
    ) -> (Self, Option<DateTime<Utc>>) {
        let failures = self.failures.saturating_add(1);
        if policy.threshold == 0 || failures < policy.threshold {
            return (Self { failures, ..self }, None);
        }
        let until = now + policy.duration(self.runs);
        let next = Self {
            failures: 0,
            runs: self.runs.saturating_add(1),
            until: Some(until),
        };
        (next, Some(until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn the_tenth_consecutive_failure_throttles_for_the_base_time() {
        let policy = ThrottlePolicy::new(10, 300);
        let mut state = LoginThrottle::default();
        for _ in 0..9 {
            let (next, started) = state.after_failure(&policy, t0());
            assert_eq!(started, None);
            assert_eq!(next.retry_after(t0()), None);
            state = next;
        }
        let (state, started) = state.after_failure(&policy, t0());
        assert_eq!(started, Some(t0() + TimeDelta::seconds(300)));
        assert_eq!(state.retry_after(t0()), Some(300));
        assert_eq!(state.retry_after(t0() + TimeDelta::seconds(299)), Some(1));
        assert_eq!(state.retry_after(t0() + TimeDelta::seconds(300)), None);
        assert!(!state.is_clear());
    }

    #[test]
    fn each_further_run_doubles_up_to_a_day() {
        let policy = ThrottlePolicy::new(10, 300);
        assert_eq!(policy.duration(0), TimeDelta::seconds(300));
        assert_eq!(policy.duration(1), TimeDelta::seconds(600));
        assert_eq!(policy.duration(3), TimeDelta::seconds(2400));
        assert_eq!(policy.duration(9), TimeDelta::hours(24));
        assert_eq!(policy.duration(u32::MAX), TimeDelta::hours(24));
        let state = LoginThrottle {
            failures: 9,
            runs: 1,
            until: Some(t0()),
        };
        let (_, until) = state.after_failure(&policy, t0());
        assert_eq!(until, Some(t0() + TimeDelta::seconds(600)));
    }

    #[test]
    fn a_threshold_of_zero_never_throttles() {
        let policy = ThrottlePolicy::new(0, 300);
        let mut state = LoginThrottle::default();
        for _ in 0..1000 {
            let (next, started) = state.after_failure(&policy, t0());
            assert_eq!(started, None);
            state = next;
        }
        assert_eq!(state.retry_after(t0()), None);
    }
}
