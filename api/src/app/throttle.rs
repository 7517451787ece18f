//! The password throttle around every password check (`login`, self-service `setPassword`):
//! while a login is throttled no password is checked; every wrong password is counted before
//! the answer leaves, in the user's stream for known users and in the store's
//! `login_throttle` table (under a keyed hash) for logins nobody registered, by the same rule
//! (`tessera_domain::user::throttle`), so the two answer the same sequence.
//!
//! Checks of one login on one node take turns behind a per-login gate, so parallel guesses
//! cannot all be checked against the same "no failures yet" state: each sees the count the
//! one before it left. Across nodes the count itself is exact (optimistic concurrency on the
//! stream, compare-and-set on the table). A user with no failures pays nothing but the gate:
//! the state comes with the stream the login loads anyway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use cqrs_es::AggregateError;
use tessera_domain::{
    crypto::KeyedHasher,
    ids::UserId,
    user::{LoginFailureReason, User, UserCommand, UserError, UserEvent, throttle::LoginThrottle},
};
use tessera_store::limits;

use crate::{
    app::{AppError, AppResult},
    state::AppState,
};

/// Hash domain of the throttle table's keys.
const KEY_DOMAIN: &str = "login-throttle";

/// Per-login gates and the key of the throttle table.
pub struct LoginThrottles {
    hasher: KeyedHasher,
    gates: Mutex<HashMap<UserId, Weak<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for LoginThrottles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottles").finish_non_exhaustive()
    }
}

/// A login's turn at checking a password, held until its outcome is counted.
pub struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl LoginThrottles {
    /// Throttles whose table keys are hashed under `hasher`'s key.
    pub fn new(hasher: KeyedHasher) -> Self {
        Self {
            hasher,
            gates: Mutex::default(),
        }
    }

    /// Waits for `user`'s turn to check a password on this node.
    pub async fn turn(&self, user: UserId) -> Turn {
        let gate = {
            let mut gates = self
                .gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match gates.get(&user).and_then(Weak::upgrade) {
                Some(gate) => gate,
                None => {
                    // Gates nobody holds are dropped as the map grows: it stays as large as
                    // the logins being checked at once.
                    if gates.len() >= 1024 && gates.len().is_power_of_two() {
                        gates.retain(|_, g| g.strong_count() > 0);
                    }
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    gates.insert(user, Arc::downgrade(&gate));
                    gate
                }
            }
        };
        Turn {
            _guard: gate.lock_owned().await,
        }
    }

    fn key(&self, user: UserId) -> String {
        self.hasher.hash(KEY_DOMAIN, &user.to_string())
    }
}

/// Hash domain of client addresses in the per-address budget's keys.
const IP_DOMAIN: &str = "login-client-ip";

/// Counts a password check against the caller's address's budget
/// (`TESSERA_LOGIN_MAX_PER_IP_PER_MINUTE`, one fixed window shared by every node) and refuses
/// it over the budget, before the login's own throttle is read or any password checked, for
/// known and unknown logins alike. Off (no round trip) unless configured. The address is
/// the socket peer's unless a trusted proxy names another (`TESSERA_TRUSTED_PROXIES`).
///
/// # Errors
/// `RATE_LIMITED` (`CLIENT_IP_THROTTLED`) with the seconds left in the window; store errors.
pub async fn ensure_ip_budget(state: &AppState, call: &crate::app::Call) -> AppResult<()> {
    let budget = state.config.login_max_per_ip_per_minute;
    let Some(ip) = call.meta.client_ip.as_deref().filter(|_| budget > 0) else {
        return Ok(());
    };
    let now = state.clock.now();
    let window = limits::Window {
        length: chrono::TimeDelta::minutes(1),
    };
    let key = format!("login:ip:{}", state.keyed_hasher.hash(IP_DOMAIN, ip));
    let n = limits::hit(&state.db, &key, window, now)
        .await
        .map_err(AppError::internal)?;
    if n > i64::from(budget) {
        return Err(AppError::RateLimited {
            reason: "CLIENT_IP_THROTTLED",
            message: "too many password checks from this address; try again later".into(),
            retry_after_seconds: window.seconds_left(now),
        });
    }
    Ok(())
}

/// The refusal while a login is throttled.
pub fn throttled(retry_after_seconds: i64) -> AppError {
    AggregateError::UserError(UserError::LoginThrottled {
        retry_after_seconds,
    })
    .into()
}

/// Where an unregistered login's throttle stands, as loaded (for [`count_failure`]).
pub type Unregistered = Option<(LoginThrottle, i64)>;

/// Refuses a throttled login. `user` is the stream as loaded; for an unregistered login the
/// table row is read (and returned, to count a failure from).
///
/// # Errors
/// `LOGIN_THROTTLED` with the seconds left; store errors.
pub async fn ensure_not_throttled(
    state: &AppState,
    user_id: UserId,
    user: &User,
) -> AppResult<Unregistered> {
    let now = state.clock.now();
    let (throttle, unregistered) = if user.exists() && !user.is_deleted() {
        (user.login_throttle, None)
    } else {
        let key = state.login_throttles.key(user_id);
        let loaded = limits::login_throttle(&state.db, &key)
            .await
            .map_err(AppError::internal)?;
        (loaded.0, Some(loaded))
    };
    match throttle.retry_after(now) {
        Some(seconds) => {
            state.metrics.password_throttled();
            Err(throttled(seconds))
        }
        None => Ok(unregistered),
    }
}

/// Counts a wrong password, before the answer: a known user's `LoginFailed` (with the
/// `LoginThrottled` it may cause) in the user's stream, an unregistered login's in the table.
/// A lost race is retried until the count is written, so every answered failure is in the
/// log, however many run at once.
///
/// # Errors
/// Store errors.
pub async fn count_failure(
    state: &AppState,
    user_id: UserId,
    loaded: Option<(User, usize)>,
    unregistered: Unregistered,
    reason: LoginFailureReason,
    metadata: &HashMap<String, String>,
) -> AppResult<()> {
    let registered = loaded.as_ref().is_some_and(|(u, _)| u.exists());
    if !registered {
        let key = state.login_throttles.key(user_id);
        let policy = state.users.services().login_throttle;
        limits::count_login_failure(&state.db, &key, &policy, state.clock.now(), unregistered)
            .await
            .map_err(AppError::internal)?;
        return Ok(());
    }
    let key = user_id.to_string();
    let mut loaded = loaded;
    loop {
        let command = UserCommand::RecordLoginFailure { reason };
        match state
            .users
            .execute_from(&key, loaded.take(), command, metadata)
            .await
        {
            Ok(committed) => {
                state.nudge();
                if committed
                    .payloads()
                    .iter()
                    .any(|e| matches!(e, UserEvent::LoginThrottled(_)))
                {
                    tracing::warn!(user = %user_id, "login throttled after a run of wrong passwords");
                }
                return Ok(());
            }
            // The store already retried many times; another round rather than a lost record.
            Err(AggregateError::AggregateConflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A correct password: the count starts again (no write when nothing was counted).
///
/// # Errors
/// Store errors.
pub async fn reset(
    state: &AppState,
    user_id: UserId,
    loaded: (User, usize),
    metadata: &HashMap<String, String>,
) -> AppResult<()> {
    if loaded.0.login_throttle.is_clear() {
        return Ok(());
    }
    let key = user_id.to_string();
    state
        .users
        .execute_from(
            &key,
            Some(loaded),
            UserCommand::ResetLoginFailures,
            metadata,
        )
        .await?;
    Ok(())
}
