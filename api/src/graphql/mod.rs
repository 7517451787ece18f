//! The GraphQL schema (frozen by the contract, docs/architecture.md): one module per feature, merged here.

mod activity;
mod alerts;
mod api_key;
mod audit;
mod challenge;
mod conventions;
mod devices;
pub mod error;
mod factor;
pub mod limits;
mod login;
mod page;
mod passkey;
mod recovery;
mod step_up;
mod timing;
mod types;
mod user;

use async_graphql::{Context, MergedObject, MergedSubscription, Schema};

use crate::{
    app::{AppError, Call},
    auth::Caller,
    state::{AppState, RequestMeta},
};

/// All queries.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    user::UserQuery,
    factor::FactorQuery,
    alerts::AlertQuery,
    api_key::ApiKeyQuery,
    audit::AuditQuery,
    challenge::ChallengeQuery,
    login::LoginQuery,
);

/// All mutations.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    user::UserMutation,
    factor::FactorMutation,
    recovery::RecoveryMutation,
    alerts::AlertMutation,
    api_key::ApiKeyMutation,
    challenge::ChallengeMutation,
    step_up::StepUpMutation,
    login::LoginMutation,
    devices::DevicesMutation,
    passkey::PasskeyMutation,
);

/// All subscriptions, over graphql-transport-ws at `/graphql/ws`.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
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
    build_with_limits(state, 12, 500)
}

/// The schema for introspection-only documents of authenticated callers: the standard
/// introspection query (nine nested `ofType`s) is 15 levels deep as the limit counts, past the
/// ordinary limit; this admits exactly that depth and no more.
pub fn build_introspection_schema(state: Option<AppState>) -> TesseraSchema {
    build_with_limits(state, 15, 2000)
}

fn build_with_limits(state: Option<AppState>, depth: usize, complexity: usize) -> TesseraSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME_DESCRIPTION)
    .limit_depth(depth)
    .limit_complexity(complexity)
    .extension(limits::ProofBudget::default())
    .extension(conventions::DocumentErrorCodes)
    .extension(timing::CommandTiming);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// Resolver helpers over the request's context.
pub(crate) trait ContextExt {
    fn state(&self) -> Result<&AppState, AppError>;
    fn caller(&self) -> Result<&Caller, AppError>;
    fn admin(&self) -> Result<&Caller, AppError>;
    /// The caller, if it may read the event log (admins and `read:audit` keys).
    fn auditor(&self) -> Result<&Caller, AppError>;
    /// The caller and the request's metadata, as the application layer takes them.
    fn call(&self) -> Call;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> Result<&AppState, AppError> {
        self.data::<AppState>()
            .map_err(|_| AppError::internal("schema built without state"))
    }

    fn caller(&self) -> Result<&Caller, AppError> {
        self.data_opt::<Caller>().ok_or(AppError::Unauthenticated)
    }

    fn admin(&self) -> Result<&Caller, AppError> {
        match self.caller()? {
            c if c.is_admin() => Ok(c),
            _ => Err(AppError::Forbidden),
        }
    }

    fn auditor(&self) -> Result<&Caller, AppError> {
        match self.caller()? {
            c if c.may_read_audit() => Ok(c),
            _ => Err(AppError::Forbidden),
        }
    }

    fn call(&self) -> Call {
        Call {
            caller: self.data_opt::<Caller>().cloned(),
            meta: self
                .data_opt::<RequestMeta>()
                .cloned()
                .unwrap_or_else(RequestMeta::internal),
        }
    }
}
