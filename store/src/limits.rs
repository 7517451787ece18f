//! Fixed-window counters for abuse limits, shared by every node on the store: one atomic
//! statement counts a hit and returns the window's count, so concurrent hits on several
//! nodes count exactly.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{Db, ts};

/// A window: `length` long, aligned to the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Its length.
    pub length: TimeDelta,
}

impl Window {
    /// The start of the window holding `now`.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let seconds = self.length.num_seconds().max(1);
        let start = now.timestamp().div_euclid(seconds) * seconds;
        DateTime::from_timestamp(start, 0).unwrap_or(now)
    }

    /// Whole seconds from `now` until the window holding it ends (at least 1).
    pub fn seconds_left(self, now: DateTime<Utc>) -> i64 {
        (self.start(now) + self.length - now).num_seconds().max(1)
    }
}

/// Counts a hit on `key` in the window holding `now`; returns the window's count with it.
///
/// # Errors
/// Database errors.
pub async fn hit(
    db: &Db,
    key: &str,
    window: Window,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rate_windows (key, window_start, count) VALUES ($1, $2, 1) \
         ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN rate_windows.window_start = excluded.window_start \
                        THEN rate_windows.count + 1 ELSE 1 END, \
           window_start = excluded.window_start \
         RETURNING count",
    )
    .bind(key)
    .bind(ts(window.start(now)))
    .fetch_one(&db.pool)
    .await
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn windows_are_aligned_and_say_how_long_is_left() {
        let minute = Window {
            length: TimeDelta::seconds(60),
        };
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 45).unwrap();
        assert_eq!(
            minute.start(at),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap()
        );
        assert_eq!(minute.seconds_left(at), 15);
        let edge = Utc.with_ymd_and_hms(2026, 1, 1, 10, 1, 0).unwrap();
        assert_eq!(minute.start(edge), edge);
        assert_eq!(minute.seconds_left(edge), 60);
    }
}
