//! API keys: `apiKeys`, `createApiKey`, `revokeApiKey` (admins only).

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::api_key::ApiKeyScope as Scope;

use crate::{
    app::{
        AppError,
        api_keys::{self, NewApiKey},
    },
    auth::ApiKeyRow,
    graphql::{
        ContextExt,
        page::{self, Connection, PageSize, Source},
    },
};

/// What an API key may do.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyScope {
    /// Everything (`admin`).
    Admin,
    /// Read the event log (`events`, query and subscription) and nothing else (`read:audit`):
    /// for a SIEM.
    ReadAudit,
}

impl From<ApiKeyScope> for Scope {
    fn from(s: ApiKeyScope) -> Self {
        match s {
            ApiKeyScope::Admin => Self::Admin,
            ApiKeyScope::ReadAudit => Self::ReadAudit,
        }
    }
}

impl From<Scope> for ApiKeyScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Admin => Self::Admin,
            Scope::ReadAudit => Self::ReadAudit,
        }
    }
}

/// An API key as listed: never its secret.
#[derive(SimpleObject, Clone, Debug)]
pub struct ApiKey {
    /// The public id (the `<id>` of `tsk_<id>_<secret>`).
    pub id: ID,
    /// The name it was given.
    pub name: String,
    /// What it may do.
    pub scope: ApiKeyScope,
    /// When it was minted.
    pub created_at: DateTime<Utc>,
    /// Who minted it (`api-key:<id>`, `operator:cli`; null for keys minted before this was
    /// recorded).
    pub created_by: Option<String>,
    /// When it stops working by itself (never if null).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Whether it authenticates now: not revoked, not expired.
    pub active: bool,
}

impl ApiKey {
    fn from_row(row: ApiKeyRow, now: DateTime<Utc>) -> Self {
        Self {
            active: row.revoked_at.is_none() && row.expires_at.is_none_or(|e| now < e),
            id: ID(row.id),
            name: row.name,
            scope: row.scope.into(),
            created_at: row.created_at,
            created_by: row.created_by,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
        }
    }
}

/// What `createApiKey` asks for.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// A name to recognise the key by (1 to 100 characters).
    pub name: String,
    /// What it may do (default `ADMIN`).
    #[graphql(default_with = "ApiKeyScope::Admin")]
    pub scope: ApiKeyScope,
    /// When it stops working by itself (never if null); must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A minted key and its token, which is shown only in this answer.
#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    /// The key.
    pub api_key: ApiKey,
    /// `tsk_<id>_<secret>`: the bearer token. Not stored anywhere; keep it now.
    pub token: String,
}

/// Input of `revokeApiKey`.
#[derive(InputObject)]
pub struct RevokeApiKeyInput {
    /// The key's id.
    pub id: ID,
}

/// Result of `revokeApiKey`.
#[derive(SimpleObject)]
pub struct RevokeApiKeyPayload {
    /// The key, revoked.
    pub api_key: ApiKey,
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// Every API key, by id, revoked and expired ones included (admins only).
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Cursor: the `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size (default 50, at most 200).")] first: Option<i32>,
    ) -> async_graphql::Result<Connection<ApiKey>> {
        let state = ctx.state()?;
        let call = ctx.call();
        call.admin()?;
        let now = state.clock.now();
        let call = &call;
        page::connection(
            ctx,
            (after, first),
            PageSize::STANDARD,
            Source {
                fetch: |after: Option<String>, n| async move {
                    api_keys::list(state, call, after.as_deref(), n).await
                },
                count: || async move { api_keys::count(state, call).await },
                cursor: |row: &ApiKeyRow| row.id.clone(),
                node: |row| Ok::<_, AppError>(ApiKey::from_row(row, now)),
            },
        )
        .await
    }
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Mints an API key (admins only). Recorded as `ApiKeyCreated`: who, which id, scope and
    /// expiry; never the secret.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Name, scope and expiry of the new key.")] input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreateApiKeyPayload> {
        async {
            let state = ctx.state()?;
            let created = api_keys::create(
                state,
                &ctx.call(),
                NewApiKey {
                    name: input.name,
                    scope: input.scope.into(),
                    expires_at: input.expires_at,
                },
            )
            .await?;
            Ok::<_, AppError>(CreateApiKeyPayload {
                api_key: ApiKey::from_row(created.key, state.clock.now()),
                token: created.token,
            })
        }
        .await
        .map_err(AppError::into_gql)
    }

    /// Revokes an API key (admins only): it is `UNAUTHENTICATED` from the next request on,
    /// on every node. Recorded as `ApiKeyRevoked`.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key to revoke.")] input: RevokeApiKeyInput,
    ) -> async_graphql::Result<RevokeApiKeyPayload> {
        let state = ctx.state()?;
        let row = api_keys::revoke(state, &ctx.call(), input.id.as_str()).await?;
        Ok(RevokeApiKeyPayload {
            api_key: ApiKey::from_row(row, state.clock.now()),
        })
    }
}
