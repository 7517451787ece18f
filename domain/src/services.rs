//! Services injected into aggregates: the clock, and the policy numbers from configuration.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use chrono::{DateTime, TimeDelta, Utc};

/// Where "now" comes from. Production uses [`SystemClock`]; tests use [`FixedClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to; shared by clones.
#[derive(Clone, Debug)]
pub struct FixedClock(Arc<AtomicI64>);

impl FixedClock {
    /// A clock standing at `t` (millisecond precision).
    pub fn at(t: DateTime<Utc>) -> Self {
        Self(Arc::new(AtomicI64::new(t.timestamp_millis())))
    }
    /// A clock standing at a Unix time in seconds.
    pub fn at_unix(secs: i64) -> Self {
        Self(Arc::new(AtomicI64::new(secs * 1000)))
    }
    /// Moves the clock forward (or back, if negative).
    pub fn advance(&self, by: TimeDelta) {
        self.0.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

/// Policy numbers for factors, from `TESSERA_*` configuration.
#[derive(Clone, Debug)]
pub struct FactorPolicy {
    /// Accepted clock skew in TOTP steps on either side (`TESSERA_TOTP_SKEW_STEPS`).
    pub totp_skew_steps: u8,
    /// Consecutive failures that lock a factor (`TESSERA_LOCKOUT_THRESHOLD`).
    pub lockout_threshold: u32,
    /// How long a lockout lasts (`TESSERA_LOCKOUT_SECONDS`).
    pub lockout_duration: TimeDelta,
    /// How long a pending enrolment may wait for activation.
    pub enrollment_ttl: TimeDelta,
    /// How long an SMS or e-mail code is valid (`TESSERA_OOB_CODE_TTL_SECONDS`, 5 min).
    pub code_ttl: TimeDelta,
    /// Wrong tries one SMS or e-mail code allows before it is dead (5).
    pub code_max_attempts: u32,
    /// Least time between two codes sent to one factor (`TESSERA_OOB_RESEND_SECONDS`, 30 s).
    pub resend_interval: TimeDelta,
    /// Most codes sent to one factor in any hour (`TESSERA_OOB_MAX_PER_HOUR`, 10; at most
    /// [`MAX_CODES_PER_HOUR`]).
    pub max_codes_per_hour: u32,
    /// Lifetime of a WebAuthn ceremony (`TESSERA_WEBAUTHN_TIMEOUT_SECONDS`, 300 s).
    pub webauthn_timeout: TimeDelta,
}

/// Upper bound of [`FactorPolicy::max_codes_per_hour`]: a factor remembers this many sends.
pub const MAX_CODES_PER_HOUR: u32 = 100;

impl Default for FactorPolicy {
    fn default() -> Self {
        Self {
            totp_skew_steps: 1,
            lockout_threshold: 5,
            lockout_duration: TimeDelta::seconds(900),
            enrollment_ttl: TimeDelta::minutes(15),
            code_ttl: TimeDelta::minutes(5),
            code_max_attempts: 5,
            resend_interval: TimeDelta::seconds(30),
            max_codes_per_hour: 10,
            webauthn_timeout: TimeDelta::seconds(300),
        }
    }
}
