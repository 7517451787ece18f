//! Abuse limits shared by every node on the store. Fixed-window counters: one atomic
//! statement counts a hit and returns the window's count, so concurrent hits on several
//! nodes count exactly. The password throttle of unregistered logins: a row per keyed hash of
//! the login, updated by compare-and-set with the domain's rule.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use tessera_domain::user::throttle::{LoginThrottle, ThrottlePolicy};

use crate::{Db, parse_ts, ts};

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
    let _turn = db.write_turn().await;
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

/// The throttle of an unregistered login (by the keyed hash of its normalised login), and the
/// version to update it from (0: no row yet).
///
/// # Errors
/// Database errors.
pub async fn login_throttle(db: &Db, key: &str) -> Result<(LoginThrottle, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT failures, runs, throttled_until, version FROM login_throttle WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok((LoginThrottle::default(), 0));
    };
    let count = |name: &str| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i64, _>(name)?).unwrap_or(u32::MAX))
    };
    let until: Option<String> = row.try_get("throttled_until")?;
    let state = LoginThrottle {
        failures: count("failures")?,
        runs: count("runs")?,
        until: until.as_deref().and_then(parse_ts),
    };
    Ok((state, row.try_get("version")?))
}

/// Counts a wrong password for an unregistered login: reads its row, applies
/// [`LoginThrottle::after_failure`] and writes the result only if no other node changed the row
/// meanwhile, else reads again; returns the state after this failure. Never gives up on a lost
/// race, so every answered failure is counted.
///
/// # Errors
/// Database errors.
pub async fn count_login_failure(
    db: &Db,
    key: &str,
    policy: &ThrottlePolicy,
    now: DateTime<Utc>,
    loaded: Option<(LoginThrottle, i64)>,
) -> Result<LoginThrottle, sqlx::Error> {
    let mut loaded = loaded;
    loop {
        let (state, version) = match loaded.take() {
            Some(l) => l,
            None => login_throttle(db, key).await?,
        };
        let (next, _) = state.after_failure(policy, now);
        let until = next.until.map(ts);
        let query = if version == 0 {
            "INSERT INTO login_throttle (key, failures, runs, throttled_until, version) \
             VALUES ($1, $2, $3, $4, 1) ON CONFLICT (key) DO NOTHING"
        } else {
            "UPDATE login_throttle SET failures = $2, runs = $3, throttled_until = $4, \
             version = version + 1 WHERE key = $1 AND version = $5"
        };
        let mut q = sqlx::query(query)
            .bind(key)
            .bind(i64::from(next.failures))
            .bind(i64::from(next.runs))
            .bind(until);
        if version != 0 {
            q = q.bind(version);
        }
        let turn = db.write_turn().await;
        let written = q.execute(&db.pool).await?.rows_affected();
        drop(turn);
        if written == 1 {
            return Ok(next);
        }
    }
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
