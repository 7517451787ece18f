//! The tessera server: axum + async-graphql over the domain and the read models.
//!
//! [`start`] opens the store, applies migrations, starts the log consumers (read models, the
//! log sealer, the log-head watch) and serves `POST /graphql`, GraphiQL on `GET /graphql`,
//! subscriptions on `GET /graphql/ws` (graphql-transport-ws), `/healthz` and `/readyz` until
//! stopped. [`cli`] holds the subcommands that work on the log offline.
//! Transport code only converts and authorises; rules live in `tessera-domain`.
#![forbid(unsafe_code)]
#![deny(clippy::all)]

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
mod graphiql;
pub mod graphql;
mod http;
pub mod jwks;
pub mod keys;
pub mod mask;
pub mod signing;
pub mod state;

pub mod tokens;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_graphql::{Data, http::ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    Router,
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{CloseFrame, Message},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::{SinkExt, StreamExt};
use tessera_domain::{
    alert::AlertServices,
    challenge::ChallengeServices,
    credential::CredentialServices,
    factor::FactorServices,
    policy::MfaPolicyServices,
    services::{Clock, SystemClock},
    user::UserServices,
};
use tessera_projections::{
    alerts::{AlertReactor, FailureRule},
    read_model::{Queries, ReadModels},
    seal::Sealer,
};
use tessera_store::{Db, LogHead, Runner, Store};
use tokio::{sync::watch, task::JoinHandle};
use tower_http::limit::RequestBodyLimitLayer;

pub use crate::config::Config;
use crate::{
    auth::Authenticator,
    graphql::{TesseraSchema, build_introspection_schema, build_schema},
    http::cors::Cors,
    state::{AppState, RequestMeta},
};

/// Largest accepted request body (the contract: larger bodies get 413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a stopping server waits for code messages still being delivered.
const DELIVERY_DRAIN: Duration = Duration::from_secs(10);

/// How long a stopping server tries to send one websocket its close frame.
const WS_CLOSE_SEND: Duration = Duration::from_secs(1);

/// How often the projection loop looks for events written by other processes.
const PROJECTION_POLL: Duration = Duration::from_millis(100);

/// Errors at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Key material.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The store.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The read side.
    #[error("projections: {0}")]
    Projections(#[from] tessera_store::Error),
    /// The listen address cannot be bound (in use, not resolvable, not local).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address as configured.
        addr: config::ListenAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Other I/O at start.
    #[error("start: {0}")]
    Io(#[from] std::io::Error),
    /// Inconsistent settings.
    #[error("configuration: {0}")]
    Config(String),
    /// Delivery settings.
    #[error(transparent)]
    Delivery(#[from] delivery::DeliveryConfigError),
}

/// Failed attempts after which a step-up or login challenge ends.
const CHALLENGE_MAX_FAILED_ATTEMPTS: u32 = 5;

/// Opens the store (applying migrations) and builds the state every request shares.
///
/// # Errors
/// See [`StartError`].
pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    let master = keys::load_master_key(&config)?;
    Cors::new(&config.cors_origins).map_err(StartError::Config)?;
    let relying_party = config.relying_party().map_err(StartError::Config)?;
    // Before the store is opened: bad delivery settings (a template with the code in a
    // subject) are refused before anything is created.
    let delivery = Arc::new(delivery::Delivery::from_config(&config)?);
    let db = Db::connect(&config.database_url, config.db_pool_size).await?;
    db.migrate().await?;
    // A user under attack collects a failure event per wrong code on any of its factors (the
    // hard-lock count): snapshotted like factors, so its load stays short too.
    let users = Store::with_snapshots(
        &db,
        UserServices {
            clock: Arc::clone(&clock),
            hard_lock_threshold: config.hard_lock_threshold,
        },
        config.factor_snapshot_every,
    );
    // A brute-forced factor collects thousands of FailedAttempt events: snapshots keep its
    // verification as fast as a new factor's.
    let factors = Store::with_snapshots(
        &db,
        FactorServices {
            clock: Arc::clone(&clock),
            cipher: master.totp_cipher(),
            hasher: master.keyed_hasher(),
            policy: config.factor_policy(),
            relying_party,
        },
        config.factor_snapshot_every,
    );
    let credentials = Store::new(
        &db,
        CredentialServices {
            clock: Arc::clone(&clock),
        },
    );
    let alerts = Store::new(
        &db,
        AlertServices {
            clock: Arc::clone(&clock),
        },
    );
    let read_models = Runner::new(db.clone(), ReadModels).await?;
    let webhook = match (&config.alert_webhook_url, &config.alert_webhook_secret) {
        (Some(url), Some(secret)) => Some(
            alerts::Webhook::new(url.clone(), secret)
                .map_err(|e| StartError::Config(format!("TESSERA_ALERT_WEBHOOK_SECRET {e}")))?,
        ),
        (Some(_), None) => {
            return Err(StartError::Config(
                "TESSERA_ALERT_WEBHOOK_URL needs TESSERA_ALERT_WEBHOOK_SECRET".into(),
            ));
        }
        _ => None,
    };
    let reactor = Runner::new(
        db.clone(),
        AlertReactor {
            rule: FailureRule {
                threshold: config.alert_threshold,
                window: chrono::TimeDelta::seconds(config.alert_window_seconds),
            },
            channels: alerts::Deliverer::channels(webhook.is_some()),
        },
    )
    .await?;
    let deliverer = alerts::Deliverer::new(db.clone(), webhook, Arc::clone(&delivery));
    let challenges = Store::new(
        &db,
        ChallengeServices {
            clock: Arc::clone(&clock),
            max_failed_attempts: CHALLENGE_MAX_FAILED_ATTEMPTS,
        },
    );
    let challenges = Arc::new(challenges);
    let messages = delivery::queue::MessageQueue::new(
        db.clone(),
        master.message_cipher(),
        Arc::clone(&delivery),
        Arc::clone(&challenges),
    );
    let policy = Store::new(
        &db,
        MfaPolicyServices {
            clock: Arc::clone(&clock),
        },
    );
    let tokens = Arc::new(
        tokens::TokenIssuer::load(
            &master,
            config.token_issuer(),
            chrono::TimeDelta::seconds(config.access_token_ttl_seconds),
            db.clone(),
            Arc::clone(&clock),
        )
        .await?,
    );
    let sealer = Runner::new(db.clone(), Sealer).await?;
    let log_head = LogHead::new(db.clone());
    let auth = Authenticator::new(
        master.keyed_hasher(),
        config.bootstrap_api_key.as_deref(),
        db.clone(),
        Arc::clone(&tokens),
        Arc::clone(&clock),
    );
    Ok(AppState {
        config: Arc::new(config),
        users: Arc::new(users),
        factors: Arc::new(factors),
        credentials: Arc::new(credentials),
        alerts: Arc::new(alerts),
        api_keys: Arc::new(Store::new(&db, ())),
        challenges,
        messages,
        policy: Arc::new(policy),
        delivery,
        tokens,
        queries: Queries::new(db.clone()),
        read_models,
        reactor,
        deliverer,
        sealer,
        log_head,
        db,
        auth: Arc::new(auth),
        clock,
        shutdown: watch::channel(false).0,
        sessions: Arc::default(),
    })
}

#[derive(Clone)]
struct App {
    state: AppState,
    schema: TesseraSchema,
    introspection: TesseraSchema,
    cors: Cors,
}

/// The HTTP routes over `state`.
pub fn app(state: AppState) -> Router {
    let schema = build_schema(Some(state.clone()));
    let introspection = build_introspection_schema(Some(state.clone()));
    // `open` refused a bad list already; this is for routers built from a hand-made state.
    let cors = Cors::new(&state.config.cors_origins).unwrap_or_else(|e| {
        tracing::error!("{e}; no origin is allowed");
        Cors::new(&[]).unwrap_or_else(|_| unreachable!("an empty list is valid"))
    });
    let cors_layer = cors.clone();
    Router::new()
        .route(
            "/graphql",
            get(graphiql::page).post(http::graphql::graphql_post),
        )
        .route("/graphql/assets/{name}", get(graphiql::asset))
        .route("/graphql/ws", get(graphql_ws))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        // The body is read by the handler: a real limit layer answers 413 before any of it
        // is parsed.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Outermost, so refusals (413, 415) carry CORS headers and a page can read them.
        .layer(axum::middleware::from_fn(move |request, next| {
            cors_layer.clone().middleware(request, next)
        }))
        .with_state(App {
            state,
            schema,
            introspection,
            cors,
        })
}

/// A caller-supplied id header, if it is a sane id (it ends up in logs and event metadata).
fn id_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
}

pub(crate) fn request_meta(headers: &HeaderMap, peer: SocketAddr) -> RequestMeta {
    let request_id =
        id_header(headers, "x-request-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    RequestMeta {
        correlation_id: id_header(headers, "x-correlation-id")
            .unwrap_or_else(|| request_id.clone()),
        request_id,
        client_ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
    }
}

/// Subscriptions over graphql-transport-ws (and the older graphql-ws). The caller
/// authenticates in `connection_init` with `{"Authorization": "Bearer <token>"}`; a missing or
/// bad token closes the connection. Sessions end when the server stops, with a close frame
/// 1001 (going away), so a client knows to reconnect and resume from its last position rather
/// than seeing the connection drop (1006). A browser page may open it only from an allowed
/// origin (`TESSERA_CORS_ORIGINS`) or Tessera's own.
async fn graphql_ws(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !app.cors.origin_allowed(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let meta = request_meta(&headers, peer);
    let auth = Arc::clone(&app.state.auth);
    let mut stop = app.state.shutdown.subscribe();
    let sessions = Arc::clone(&app.state.sessions);
    let schema = app.schema;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let _open = sessions.open();
            // The session writes through a channel, not the socket, so the socket is still ours
            // to send the close frame on when the server stops mid-session.
            let (mut sink, stream) = socket.split();
            let (tx, mut rx) = futures::channel::mpsc::channel::<Message>(16);
            let session = GraphQLWebSocket::new_with_pair(tx, stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(serde_json::Value::as_str));
                    let Some(caller) = auth.authenticate(token).await else {
                        return Err(async_graphql::Error::new("unauthenticated"));
                    };
                    let mut data = Data::default();
                    data.insert(caller);
                    data.insert(meta);
                    Ok(data)
                })
                .serve();
            let stopping = {
                let forward = async {
                    while let Some(message) = rx.next().await {
                        if sink.send(message).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = futures::future::join(session, forward) => false,
                    _ = stop.wait_for(|s| *s) => true,
                }
            };
            if stopping {
                let close = Message::Close(Some(CloseFrame {
                    code: http::shutdown::GOING_AWAY,
                    reason: "server shutting down".into(),
                }));
                // A client that reads nothing must not hold the stop up.
                let _ = tokio::time::timeout(WS_CLOSE_SEND, sink.send(close)).await;
            }
        })
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared state (tests read the store through it).
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    /// Stops the log consumers, once requests are done (an in-flight mutation waits for the
    /// read models to show its write).
    consumers_stop: watch::Sender<bool>,
    grace: Duration,
    http: JoinHandle<std::io::Result<()>>,
    consumers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, sends every websocket a close frame (1001), lets in-flight requests
    /// finish within the grace period (`TESSERA_SHUTDOWN_GRACE_SECONDS`), waits for code
    /// deliveries, and stops the log consumers.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.wait().await;
    }

    /// Resolves when a stop was requested by [`Server::stop`] or the shutdown signal, after
    /// the same steps as [`Server::stop`].
    pub async fn wait(self) -> std::io::Result<()> {
        let result = match self.http.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        let _ = self.shutdown.send(true);
        if !self.state.sessions.closed(self.grace).await {
            tracing::warn!(
                open = self.state.sessions.count(),
                "stopped with websockets that did not take their close frame"
            );
        }
        if !self.state.delivery.drain(DELIVERY_DRAIN).await {
            tracing::warn!("stopped with code deliveries still in flight");
        }
        let _ = self.consumers_stop.send(true);
        futures::future::join_all(self.consumers).await;
        result
    }

    /// A sender that stops the server when `true` is sent.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts a server with the system clock.
///
/// # Errors
/// See [`StartError`].
pub async fn start(config: Config) -> Result<Server, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts a server with the given clock (tests move time).
///
/// # Errors
/// See [`StartError`].
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
    // Bound before the store is opened: a port in use (or a name that does not resolve)
    // fails the start before a database, a key file or a migration is created.
    let listener = tokio::net::TcpListener::bind((config.listen.host(), config.listen.port()))
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let state = open(config, clock).await?;
    for (channel, route) in state.delivery.describe() {
        tracing::info!(
            channel = channel.as_str(),
            "{} codes go to {route}",
            channel.as_str()
        );
    }
    if let (Some(warning), Some(path)) = (
        state.delivery.outbox_warning(),
        state.delivery.outbox_path(),
    ) {
        tracing::warn!(outbox = %path.display(), "{warning}");
    }
    // The dummy hash for logins of unknown users is drawn now, not on the first login.
    tokio::task::spawn_blocking(tessera_domain::crypto::dummy_password_hash)
        .await
        .map_err(std::io::Error::other)?;
    // Catch up before answering, so reads after a restart are current.
    state.read_models.catch_up().await?;
    state.reactor.catch_up().await?;
    state.log_head.refresh().await?;
    let shutdown = state.shutdown.clone();
    let consumers_stop = watch::channel(false).0;
    let rx = consumers_stop.subscribe();
    let consumers = vec![
        state.read_models.spawn(PROJECTION_POLL, rx.clone()),
        state.reactor.spawn(PROJECTION_POLL, rx.clone()),
        state.deliverer.spawn(PROJECTION_POLL, rx.clone()),
        tessera_store::worker::spawn(
            Arc::clone(&state.messages),
            "code messages",
            PROJECTION_POLL,
            rx.clone(),
            delivery::queue::MessageQueue::waker,
            |q| async move { q.drain().await },
        ),
        state.sealer.spawn(PROJECTION_POLL, rx.clone()),
        state.log_head.spawn(PROJECTION_POLL, rx.clone()),
        Arc::clone(&state.tokens).spawn(rx),
    ];
    let addr = listener.local_addr()?;
    let router = app(state.clone());
    let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
    let mut stop = shutdown.subscribe();
    let mut grace_stop = shutdown.subscribe();
    let http = tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .into_future();
        // Graceful shutdown waits for every open request; a stuck one must not keep the
        // process up forever.
        let deadline = async move {
            let _ = grace_stop.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = serve => result,
            () = deadline => {
                tracing::warn!(grace_seconds = grace.as_secs(), "requests still in flight after the grace period; stopping anyway");
                Ok(())
            }
        }
    });
    Ok(Server {
        addr,
        state,
        shutdown,
        consumers_stop,
        grace,
        http,
        consumers,
    })
}
