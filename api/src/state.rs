//! What every request shares.

use std::{collections::HashMap, sync::Arc, time::Duration};

use cqrs_es::{Aggregate, AggregateError};
use tessera_domain::{
    alert::Alert, api_key::ApiKey, challenge::Challenge, credential::WebAuthnCredential,
    factor::Factor, policy::MfaPolicy, services::Clock, user::User,
};
use tessera_projections::{
    alerts::AlertReactor,
    read_model::{Queries, ReadModels},
    seal::Sealer,
};
use tessera_store::{Committed, Db, LogHead, Runner, Store};
use tokio::sync::watch;

use crate::{
    alerts::Deliverer,
    app::throttle::LoginThrottles,
    auth::Authenticator,
    config::Config,
    delivery::{Delivery, queue::MessageQueue},
    http::shutdown::Sessions,
    tokens::TokenIssuer,
};

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// Users.
    pub users: Arc<Store<User>>,
    /// Factors.
    pub factors: Arc<Store<Factor>>,
    /// WebAuthn credential ids, each claimed by the factor that registered it.
    pub credentials: Arc<Store<WebAuthnCredential>>,
    /// Security alerts (acknowledgement).
    pub alerts: Arc<Store<Alert>>,
    /// API keys (who minted and revoked which key).
    pub api_keys: Arc<Store<ApiKey>>,
    /// Challenges (step-up, login, sent codes).
    pub challenges: Arc<Store<Challenge>>,
    /// The MFA policy (one stream).
    pub policy: Arc<Store<MfaPolicy>>,
    /// SMTP, SMS gateway, outbox.
    pub delivery: Arc<Delivery>,
    /// This process's counters and histograms (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Code messages waiting to be sent.
    pub messages: Arc<MessageQueue>,
    /// Access tokens.
    pub tokens: Arc<TokenIssuer>,
    /// Read models.
    pub queries: Queries,
    /// The security-alert reactor.
    pub reactor: Arc<Runner<AlertReactor>>,
    /// The alert outbox worker.
    pub deliverer: Arc<Deliverer>,
    /// The read-model projection.
    pub read_models: Arc<Runner<ReadModels>>,
    /// The consumer that extends the log's hash chain.
    pub sealer: Arc<Runner<Sealer>>,
    /// The log's head, which subscriptions wait on.
    pub log_head: Arc<LogHead>,
    /// The store's one pool (the write side, the consumers and the readers share it).
    pub db: Db,
    /// Turns true when the server stops; long-lived sessions (websockets) end on it.
    pub shutdown: watch::Sender<bool>,
    /// Open websocket sessions, which a stopping server waits for to send their close frame.
    pub sessions: Arc<Sessions>,
    /// Bearer tokens.
    pub auth: Arc<Authenticator>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Seals the capability tokens of TOTP QR-code links (`app::qr_link`).
    pub qr_links: tessera_domain::crypto::SecretCipher,
    /// Keyed hashes (device tokens).
    pub keyed_hasher: tessera_domain::crypto::KeyedHasher,
    /// Per-login gates and keys of the password throttle.
    pub login_throttles: Arc<LoginThrottles>,
    /// The bounded pool every argon2 job runs on.
    pub hashing: Arc<crate::app::hashing::HashPool>,
}

/// Request context recorded in every event's metadata (not in payloads).
#[derive(Clone, Debug)]
pub struct RequestMeta {
    /// Per-request id drawn by the server, also in the `x-request-id` response header and in
    /// logs. Never the caller's.
    pub request_id: String,
    /// The caller's own `x-request-id`, kept as theirs (`client_request_id`).
    pub client_request_id: Option<String>,
    /// Ties the requests of one flow together (a login: challenge, then verify): the
    /// caller's `x-correlation-id`, or this request's id.
    pub correlation_id: String,
    /// Whether `correlation_id` is the caller's.
    pub client_correlation: bool,
    /// The peer address.
    pub client_ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Which API and route the request came through (`POST /graphql`,
    /// `POST /api/v1/users/{userId}/factors`): the audit log tells the transports apart by it.
    pub route: Option<String>,
}

impl RequestMeta {
    /// Context for a request with no HTTP headers to read (tests, internal callers).
    pub fn internal() -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        Self {
            request_id: id.clone(),
            client_request_id: None,
            correlation_id: id,
            client_correlation: false,
            client_ip: None,
            user_agent: None,
            route: None,
        }
    }

    /// Event metadata for `actor`.
    pub fn metadata(&self, actor: &str) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("actor".to_string(), actor.to_string()),
            ("request_id".to_string(), self.request_id.clone()),
            ("correlation_id".to_string(), self.correlation_id.clone()),
        ]);
        if let Some(ip) = &self.client_ip {
            m.insert("client_ip".into(), ip.clone());
        }
        if let Some(ua) = &self.user_agent {
            m.insert("user_agent".into(), ua.clone());
        }
        if let Some(route) = &self.route {
            m.insert("route".into(), route.clone());
        }
        // What the caller said about itself is kept, but marked as the caller's: an audit
        // reader must not take a client's request id, correlation id or user agent for facts.
        let mut supplied = Vec::new();
        if let Some(id) = &self.client_request_id {
            m.insert("client_request_id".into(), id.clone());
            supplied.push("client_request_id");
        }
        if self.client_correlation {
            supplied.push("correlation_id");
        }
        if self.user_agent.is_some() {
            supplied.push("user_agent");
        }
        if !supplied.is_empty() {
            m.insert("client_supplied".into(), supplied.join(","));
        }
        m
    }
}

impl AppState {
    /// How long a mutation waits for the read models to show what it wrote.
    fn read_your_writes(&self) -> Duration {
        Duration::from_millis(self.config.read_your_writes_ms)
    }

    /// After a commit nobody needs to read back at once: wake the consumers, do not wait.
    pub fn nudge(&self) {
        self.read_models.nudge();
        self.reactor.nudge();
        self.log_head.nudge();
    }

    /// After a commit to an alert: [`AppState::settle`], and waits (bounded) for the alert
    /// reactor too, which keeps `security_alerts_v1`, so `securityAlerts` right after an
    /// acknowledgement or a "seen" shows it.
    pub async fn settle_alert<A: Aggregate>(&self, id: &str, committed: &Committed<A>) {
        self.settle(id, committed).await;
        let Some(seq) = committed.last_sequence() else {
            return;
        };
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let applied = match committed.cursor {
            Some(cursor) => Ok(self.reactor.wait_for(cursor, self.read_your_writes()).await),
            None => {
                self.reactor
                    .wait_for_event(A::TYPE, id, seq, self.read_your_writes())
                    .await
            }
        };
        match applied {
            Ok(true) => {}
            Ok(false) => tracing::warn!(id, "the alert reactor lags behind a commit"),
            Err(e) => tracing::warn!(error = %e, "could not wait for the alert reactor"),
        }
    }

    /// After a commit, waits (bounded) until the read models include it, so a query right
    /// after a mutation sees the mutation.
    pub async fn settle<A: Aggregate>(&self, id: &str, committed: &Committed<A>) {
        let Some(seq) = committed.last_sequence() else {
            return;
        };
        // Alerts and subscriptions need not wait, but need not wait for a poll either.
        self.reactor.nudge();
        self.log_head.nudge();
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        // The append told where its rows sit (PostgreSQL): no query to look the event up.
        let applied = match committed.cursor {
            Some(cursor) => Ok(self
                .read_models
                .wait_for(cursor, self.read_your_writes())
                .await),
            None => {
                self.read_models
                    .wait_for_event(A::TYPE, id, seq, self.read_your_writes())
                    .await
            }
        };
        match applied {
            Ok(true) => {}
            Ok(false) => tracing::warn!(aggregate = A::TYPE, id, "read models lag behind a commit"),
            Err(e) => tracing::warn!(error = %e, "could not wait for read models"),
        }
    }
}

/// Convenience for resolvers: the aggregate error type of `A`.
pub type CommandError<A> = AggregateError<<A as Aggregate>::Error>;
