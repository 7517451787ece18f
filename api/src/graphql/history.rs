//! Point-in-time reads: `user(id, asOf)` and `factor(id, asOf)` fold the log up to a moment
//! (by the time the store recorded each event) through the aggregates' own `apply`, so they
//! answer "what did Tessera know then", including events no read model keeps.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use tessera_domain::{
    factor::Factor as FactorAgg,
    ids::{FactorId, UserId},
    user::User as UserAgg,
    versioning::Versioned,
};
use tessera_projections::{StoredEvent, audit};

use crate::{
    graphql::{
        error::{ApiError, ApiResult},
        types::{Factor, User},
    },
    state::AppState,
};

/// Folds a stream's events (upcast as the write side would) into its aggregate.
pub(crate) fn fold<A>(events: &[StoredEvent]) -> ApiResult<A>
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

async fn stream<A>(state: &AppState, id: &str, at: DateTime<Utc>) -> ApiResult<A>
where
    A: Aggregate,
    A::Event: Versioned,
{
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let events = audit::stream_as_of(&mut conn, state.db.backend, A::TYPE, id, at).await?;
    fold(&events)
}

/// The user as at `at`, or `None` if not registered by then.
pub(crate) async fn user(
    state: &AppState,
    id: UserId,
    at: DateTime<Utc>,
) -> ApiResult<Option<User>> {
    let key = id.to_string();
    let user: UserAgg = stream(state, &key, at).await?;
    if !user.exists() {
        return Ok(None);
    }
    let mut user = User::from_aggregate(key, &user);
    user.as_of = Some(at);
    Ok(Some(user))
}

/// The factor as at `at` with its owner, or `None` if not enrolled by then.
pub(crate) async fn factor(
    state: &AppState,
    id: FactorId,
    at: DateTime<Utc>,
) -> ApiResult<Option<(UserId, Factor)>> {
    let factor: FactorAgg = stream(state, &id.to_string(), at).await?;
    match factor.user_id {
        Some(owner) if factor.exists() => {
            Ok(Some((owner, Factor::from_aggregate(id, &factor, at))))
        }
        _ => Ok(None),
    }
}

/// The factors a user had enrolled by `at`, each as at `at`, in id order.
pub(crate) async fn factors_of_user(
    state: &AppState,
    user_id: &str,
    at: DateTime<Utc>,
) -> ApiResult<Vec<Factor>> {
    let ids = {
        let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
        audit::owned_as_of(&mut conn, state.db.backend, user_id, FactorAgg::TYPE, at).await?
    };
    let mut factors = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(id) = FactorId::parse(&id) else {
            return Err(ApiError::internal(format!(
                "malformed factor id {id} in the log"
            )));
        };
        if let Some((_, f)) = factor(state, id, at).await? {
            factors.push(f);
        }
    }
    Ok(factors)
}
