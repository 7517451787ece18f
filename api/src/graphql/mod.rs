//! The GraphQL schema (SPEC §4 Contract): one module per feature, merged here.

mod alerts;
mod audit;
mod challenge;
pub mod error;
mod factor;
mod history;
pub mod limits;
mod login;
mod recovery;
mod step_up;
mod types;
mod user;

use async_graphql::{Context, MergedObject, MergedSubscription, Schema};

use crate::{
    auth::Caller,
    graphql::error::ApiError,
    state::{AppState, RequestMeta},
};

/// All queries.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    user::UserQuery,
    factor::FactorQuery,
    alerts::AlertQuery,
    audit::AuditQuery,
    challenge::ChallengeQuery,
    login::LoginQuery,
);

/// All mutations.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    user::UserMutation,
    factor::FactorMutation,
    recovery::RecoveryMutation,
    alerts::AlertMutation,
    challenge::ChallengeMutation,
    step_up::StepUpMutation,
    login::LoginMutation,
);

/// All subscriptions, over graphql-transport-ws at `/graphql/ws`.
#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(alerts::AlertSubscription, audit::AuditSubscription);

/// The schema type.
pub type TesseraSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What clients read about the `DateTime` scalar (the library's text names the Rust type).
const DATE_TIME_DESCRIPTION: &str = "A point in time, as an RFC 3339 string. Results are in UTC, \
     with fractional seconds when there are any: `2026-03-01T12:00:00.250+00:00`. Arguments may \
     use `Z` or any offset: `2026-03-01T12:00:00Z` and `2026-03-01T13:00:00+01:00` are the same \
     instant.";

/// Builds the schema over `state` (`None` only for printing the SDL).
pub fn build_schema(state: Option<AppState>) -> TesseraSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME_DESCRIPTION)
    .limit_depth(12)
    .limit_complexity(500)
    .extension(limits::ProofBudget);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// Resolver helpers over the request's context.
pub(crate) trait ContextExt {
    fn state(&self) -> Result<&AppState, ApiError>;
    fn caller(&self) -> Result<&Caller, ApiError>;
    fn meta(&self) -> RequestMeta;
    fn admin(&self) -> Result<&Caller, ApiError>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> Result<&AppState, ApiError> {
        self.data::<AppState>()
            .map_err(|_| ApiError::internal("schema built without state"))
    }

    fn caller(&self) -> Result<&Caller, ApiError> {
        self.data_opt::<Caller>().ok_or(ApiError::Unauthenticated)
    }

    fn meta(&self) -> RequestMeta {
        self.data_opt::<RequestMeta>()
            .cloned()
            .unwrap_or_else(RequestMeta::internal)
    }

    fn admin(&self) -> Result<&Caller, ApiError> {
        match self.caller()? {
            c @ Caller::Admin { .. } => Ok(c),
            Caller::User { .. } | Caller::Enrollment { .. } => Err(ApiError::Forbidden),
        }
    }
}
