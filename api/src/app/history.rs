//! Point-in-time reads: `user(id, asOf)` and `factor(id, asOf)` fold the log up to a moment
//! (by the time the store recorded each event) through the aggregates' own `apply`, so they
//! answer "what did Tessera know then", including events no read model keeps.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use tessera_domain::{
    factor::Factor,
    ids::{FactorId, UserId},
    user::User,
    versioning::Versioned,
};
use tessera_projections::audit;
use tessera_store::StoredEvent;

use crate::{
    app::{AppError, AppResult},
    state::AppState,
};

/// Folds a stream's events (upcast as the write side would) into its aggregate.
fn fold<A>(events: &[StoredEvent]) -> AppResult<A>
where
    A: Aggregate,
    A::Event: Versioned,
{
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}

async fn stream<A>(state: &AppState, id: &str, at: DateTime<Utc>) -> AppResult<A>
where
    A: Aggregate,
    A::Event: Versioned,
{
    let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
    let events = audit::stream_as_of(&mut conn, state.db.dialect, A::TYPE, id, at).await?;
    fold(&events)
}

/// The user as at `at`, or `None` if not registered by then.
///
/// # Errors
/// Store and decoding errors.
pub async fn user(state: &AppState, id: UserId, at: DateTime<Utc>) -> AppResult<Option<User>> {
    let at = super::moment(at)?;
    let user: User = stream(state, &id.to_string(), at).await?;
    Ok(user.exists().then_some(user))
}

/// The factor as at `at` with its owner, or `None` if not enrolled by then.
///
/// # Errors
/// Store and decoding errors.
pub async fn factor(
    state: &AppState,
    id: FactorId,
    at: DateTime<Utc>,
) -> AppResult<Option<(UserId, Factor)>> {
    let factor: Factor = stream(state, &id.to_string(), at).await?;
    Ok(match factor.user_id {
        Some(owner) if factor.exists() => Some((owner, factor)),
        _ => None,
    })
}

/// The factors a user had enrolled by `at`, each as at `at`, in id order.
///
/// # Errors
/// Store and decoding errors; a malformed id in the log.
pub async fn factors_of_user(
    state: &AppState,
    user_id: &str,
    at: DateTime<Utc>,
) -> AppResult<Vec<(FactorId, Factor)>> {
    let ids = {
        let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
        audit::owned_as_of(&mut conn, state.db.dialect, user_id, Factor::TYPE, at).await?
    };
    let mut factors = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(id) = FactorId::parse(&id) else {
            return Err(AppError::internal(format!(
                "malformed factor id {id} in the log"
            )));
        };
        if let Some((_, f)) = factor(state, id, at).await? {
            factors.push((id, f));
        }
    }
    Ok(factors)
}
