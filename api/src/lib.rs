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
pub mod client_ip;
pub mod config;
pub mod delivery;
mod graphiql;
pub mod graphql;
mod http;
pub mod jwks;
pub mod keys;
pub mod mask;
pub mod metrics;
mod okta;
pub mod signing;
pub mod state;

pub mod tokens;
mod ui;

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

/// How long a websocket may stay open without `connection_init` (graphql-transport-ws closes
/// it with 4408).
const WS_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an open websocket's token is checked again: an expired token, a revoked API key
/// or a token generation moved on closes the session with 4401 within this.
const WS_RECHECK: Duration = Duration::from_secs(1);

/// graphql-transport-ws close codes.
const WS_UNAUTHORIZED: u16 = 4401;
const WS_INIT_TIMED_OUT: u16 = 4408;

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
    /// The store cannot be reached.
    #[error("cannot connect to {store}: {}", describe_connect_error(source))]
    Connect {
        /// The store's URL, without its password.
        store: String,
        /// Why.
        source: sqlx::Error,
    },
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
    /// A command other than `serve` or `migrate` found no store where it looked.
    #[error(
        "no Tessera store at {0}: run the command where the store is (TESSERA_DATABASE_URL), or create one with `tessera migrate` or `tessera serve`"
    )]
    NoStore(String),
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

/// A connection error with its cause (sqlx's own text for a refused connection names no
/// cause beyond the I/O error; a pool timeout names none at all).
fn describe_connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("{io} ({:?})", io.kind()),
        sqlx::Error::PoolTimedOut => {
            "no connection within the timeout (is the server up and reachable?)".into()
        }
        other => other.to_string(),
    }
}

/// Failed attempts after which a step-up or login challenge ends.
const CHALLENGE_MAX_FAILED_ATTEMPTS: u32 = 5;

/// Opens the store (applying migrations) and builds the state every request shares.
///
/// # Errors
/// See [`StartError`].
pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    open_store(config, clock, Create::IfMissing).await
}

/// Like [`open`], but refuses to create a store: for the commands that work on an existing
/// one.
///
/// # Errors
/// [`StartError::NoStore`]; see [`StartError`].
pub async fn open_existing(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    open_store(config, clock, Create::Never).await
}

/// Whether opening may create the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// `serve` and `migrate`: a missing SQLite file (or empty PostgreSQL database) is created.
    IfMissing,
    /// Every other command: a missing store is an error naming where it looked.
    Never,
}

/// Connects to the configured store and applies migrations; with [`Create::Never`], a store
/// that does not exist yet is refused before anything is written.
///
/// # Errors
/// [`StartError::NoStore`], bad settings, the connection, migrations.
pub async fn connect_store(config: &Config, create: Create) -> Result<Db, StartError> {
    config::check_database_url(&config.database_url).map_err(StartError::Config)?;
    if let Some(path) = config.sqlite_path() {
        let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        if create == Create::Never && !path.exists() {
            return Err(StartError::NoStore(shown.display().to_string()));
        }
        let folder = shown.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(folder) = folder
            && !folder.is_dir()
        {
            return Err(StartError::Config(format!(
                "TESSERA_DATABASE_URL: the folder {} does not exist; create it or point the URL at another folder",
                folder.display()
            )));
        }
    }
    let db = Db::connect(&config.database_url, config.db_pool_size)
        .await
        .map_err(|e| StartError::Connect {
            store: config::redacted_url(&config.database_url),
            source: e,
        })?;
    if create == Create::Never && db.dialect == tessera_store::Dialect::Postgres {
        let initialised: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = '_sqlx_migrations')",
        )
        .fetch_one(&db.pool)
        .await?;
        if !initialised {
            return Err(StartError::NoStore(config::redacted_url(
                &config.database_url,
            )));
        }
    }
    db.migrate().await?;
    Ok(db)
}

async fn open_store(
    config: Config,
    clock: Arc<dyn Clock>,
    create: Create,
) -> Result<AppState, StartError> {
    config::check_database_url(&config.database_url).map_err(StartError::Config)?;
    // A malformed key is refused before anything is created.
    keys::configured_key(&config)?;
    Cors::new(&config.cors_origins).map_err(StartError::Config)?;
    ui::ReturnOrigins::new(&config.ui_return_origins).map_err(StartError::Config)?;
    let relying_party = config.relying_party().map_err(StartError::Config)?;
    // Before the store is opened: bad delivery settings (a template with the code in a
    // subject) are refused before anything is created.
    let delivery = Arc::new(delivery::Delivery::from_config(&config)?);
    let db = connect_store(&config, create).await?;
    // Secrets at rest under the ring; keyed hashes and signing keys under the store's root.
    let keys::Keys { ring, root: master } = keys::load_keys(&config, &db).await?;
    // A user under attack collects a failure event per wrong code on any of its factors (the
    // hard-lock count): snapshotted like factors, so its load stays short too.
    let users = Store::with_snapshots(
        &db,
        UserServices {
            clock: Arc::clone(&clock),
            hard_lock_threshold: config.hard_lock_threshold,
            login_throttle: config.login_throttle(),
        },
        config.factor_snapshot_every,
    )
    .with_cache(config.aggregate_cache);
    // A brute-forced factor collects thousands of FailedAttempt events: snapshots keep its
    // verification as fast as a new factor's.
    let factors = Store::with_snapshots(
        &db,
        FactorServices {
            clock: Arc::clone(&clock),
            cipher: ring.totp_cipher(),
            hasher: master.keyed_hasher(),
            policy: config.factor_policy(),
            relying_party,
        },
        config.factor_snapshot_every,
    )
    .with_cache(config.aggregate_cache);
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
        ring.message_cipher(),
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
    let users = Arc::new(users);
    let auth = Authenticator::new(
        master.keyed_hasher(),
        config.bootstrap_api_key.as_deref(),
        db.clone(),
        Arc::clone(&tokens),
        Arc::clone(&users),
        Arc::clone(&clock),
    );
    let metrics = Arc::<metrics::Metrics>::default();
    let hashing = Arc::new(app::hashing::HashPool::new(
        config.hash_concurrency,
        config.hash_queue,
        Arc::clone(&metrics),
    ));
    Ok(AppState {
        config: Arc::new(config),
        users,
        factors: Arc::new(factors),
        credentials: Arc::new(credentials),
        alerts: Arc::new(alerts),
        api_keys: Arc::new(Store::new(&db, ())),
        challenges,
        messages,
        policy: Arc::new(policy),
        delivery,
        metrics,
        hashing,
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
        qr_links: ring.qr_link_cipher(),
        shutdown: watch::channel(false).0,
        sessions: Arc::default(),
        keyed_hasher: master.keyed_hasher(),
        login_throttles: Arc::new(app::throttle::LoginThrottles::new(master.keyed_hasher())),
    })
}

#[derive(Clone)]
struct App {
    state: AppState,
    schema: TesseraSchema,
    introspection: TesseraSchema,
    cors: Cors,
    /// Where hosted pages may send their result (`TESSERA_UI_RETURN_ORIGINS`).
    return_origins: ui::ReturnOrigins,
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
    let return_origins =
        ui::ReturnOrigins::new(&state.config.ui_return_origins).unwrap_or_else(|e| {
            tracing::error!("{e}; hosted pages return nowhere");
            ui::ReturnOrigins::default()
        });
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
        .nest("/api/v1", okta::routes())
        .merge(ui::routes())
        // The body is read by the handler: a real limit layer answers 413 before any of it
        // is parsed.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            http::access,
        ))
        // Outermost, so refusals (413, 415) carry CORS headers and a page can read them.
        .layer(axum::middleware::from_fn(move |request, next| {
            cors_layer.clone().middleware(request, next)
        }))
        .with_state(App {
            state,
            schema,
            introspection,
            cors,
            return_origins,
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

/// Where [`http::access`] hands the caller's own `x-request-id` on to the handler, having put
/// the server's id in `x-request-id`.
pub(crate) const CLIENT_REQUEST_ID: &str = "x-tessera-client-request-id";

/// A request's metadata; the client address is the socket peer's, or behind a trusted proxy
/// the one `X-Forwarded-For` names ([`client_ip`]).
pub(crate) fn request_meta(
    headers: &HeaderMap,
    peer: SocketAddr,
    proxies: &[ipnet::IpNet],
) -> RequestMeta {
    // `http::access` runs first on every route: `x-request-id` is the server's id by now.
    let request_id =
        id_header(headers, "x-request-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let client_correlation = id_header(headers, "x-correlation-id");
    RequestMeta {
        client_correlation: client_correlation.is_some(),
        correlation_id: client_correlation.unwrap_or_else(|| request_id.clone()),
        client_request_id: id_header(headers, CLIENT_REQUEST_ID),
        request_id,
        client_ip: Some(client_ip::client_ip(proxies, peer.ip(), headers).to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
        route: None,
    }
}

/// Subscriptions over graphql-transport-ws (and the older graphql-ws). The caller
/// authenticates in `connection_init` with `{"Authorization": "Bearer <token>"}`; a missing or
/// bad token closes the connection, no `connection_init` within [`WS_INIT_TIMEOUT`] closes it
/// with 4408, and the token is checked again every [`WS_RECHECK`]: once it has expired or
/// been revoked the session closes with 4401 (a session lives no longer than its token). Sessions end when the server stops, with a close frame
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
    let mut meta = request_meta(&headers, peer, &app.state.config.trusted_proxies);
    meta.route = Some("GET /graphql/ws".into());
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
            let (accepted, token_rx) = tokio::sync::oneshot::channel::<String>();
            let init_auth = Arc::clone(&auth);
            let session = GraphQLWebSocket::new_with_pair(tx, stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(serde_json::Value::as_str));
                    let Some(caller) = init_auth.authenticate(token).await else {
                        return Err(async_graphql::Error::new("unauthenticated"));
                    };
                    if let Some(token) = token {
                        let _ = accepted.send(token.to_string());
                    }
                    let mut data = Data::default();
                    data.insert(caller);
                    data.insert(meta);
                    Ok(data)
                })
                .serve();
            // Ends with a close code when the session must end: no `connection_init` in time,
            // or its token no longer authenticates.
            let lapse = async {
                let token = match tokio::time::timeout(WS_INIT_TIMEOUT, token_rx).await {
                    Ok(Ok(token)) => token,
                    // Refused at init: the session closes it itself.
                    Ok(Err(_)) => return std::future::pending().await,
                    Err(_) => return (WS_INIT_TIMED_OUT, "connection initialisation timeout"),
                };
                loop {
                    tokio::time::sleep(WS_RECHECK).await;
                    if auth.authenticate(Some(&token)).await.is_none() {
                        return (WS_UNAUTHORIZED, "token expired or revoked");
                    }
                }
            };
            let ending = {
                let forward = async {
                    while let Some(message) = rx.next().await {
                        if sink.send(message).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = futures::future::join(session, forward) => None,
                    _ = stop.wait_for(|s| *s) => Some((http::shutdown::GOING_AWAY, "server shutting down")),
                    ended = lapse => Some(ended),
                }
            };
            if let Some((code, reason)) = ending {
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }));
                // A client that reads nothing must not hold the stop up.
                let _ = tokio::time::timeout(WS_CLOSE_SEND, sink.send(close)).await;
            }
        })
}

/// Serves `router` on `listener` (with the connection limits of [`http::serve`]) until
/// `shutdown`, then for at most `grace`.
fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: &watch::Sender<bool>,
    grace: Duration,
    limits: http::serve::Limits,
) -> JoinHandle<std::io::Result<()>> {
    let stop = shutdown.subscribe();
    let mut grace_stop = shutdown.subscribe();
    tokio::spawn(async move {
        let serve = async move {
            http::serve::serve(listener, router, limits, stop).await;
            Ok(())
        };
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
    })
}

/// The HTTP front of a server whose store was unreachable at start: answers `/healthz`, and
/// 503 with the reason on every other route, until [`WaitingFront::ready`] hands it the real
/// routes.
#[derive(Clone, Default)]
struct WaitingFront {
    inner: Arc<std::sync::RwLock<FrontState>>,
}

#[derive(Default)]
struct FrontState {
    reason: String,
    router: Option<Router>,
}

impl WaitingFront {
    fn set_reason(&self, reason: String) {
        if let Ok(mut s) = self.inner.write() {
            s.reason = reason;
        }
    }

    fn ready(&self, router: Router) {
        if let Ok(mut s) = self.inner.write() {
            s.router = Some(router);
        }
    }

    fn router(&self) -> Router {
        let front = self.clone();
        Router::new().fallback(move |request: axum::extract::Request| front.clone().handle(request))
    }

    async fn handle(self, request: axum::extract::Request) -> Response {
        let (router, reason) = match self.inner.read() {
            Ok(s) => (s.router.clone(), s.reason.clone()),
            Err(_) => (None, "internal state".into()),
        };
        match router {
            Some(mut router) => match tower_service::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None if request.uri().path() == "/healthz" => "ok".into_response(),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unreachable: {reason}"),
            )
                .into_response(),
        }
    }
}

/// Retries opening the store with backoff (0.5 s doubling to 10 s), logging each failure with
/// its cause, until it opens, a setting error shows, or `stop`.
async fn wait_for_store(
    config: Config,
    clock: Arc<dyn Clock>,
    front: &WaitingFront,
    first: StartError,
    mut stop: watch::Receiver<bool>,
) -> Option<AppState> {
    let mut delay = Duration::from_millis(500);
    let mut error = first;
    loop {
        tracing::error!(
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "{error}; retrying (/healthz answers, /readyz is 503 until then)"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
        match open(config.clone(), Arc::clone(&clock)).await {
            Ok(state) => {
                tracing::info!("the store is reachable now");
                return Some(state);
            }
            Err(e) if e.is_unreachable() => {
                front.set_reason(e.to_string());
                error = e;
            }
            Err(e) => {
                tracing::error!("{e}");
                front.set_reason(e.to_string());
                error = e;
            }
        }
    }
}

impl StartError {
    /// Whether the store could not be reached (worth retrying), as opposed to refused
    /// settings.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect {
                source: sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut,
                ..
            }
        )
    }
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
    let mut listener = Some(listener);
    let shutdown = watch::channel(false).0;
    let (mut state, waiting) = match open(config.clone(), Arc::clone(&clock)).await {
        Ok(state) => (state, None),
        Err(e) if e.is_unreachable() => {
            // Up and answering while the store is not: /healthz 200, /readyz 503 (and every
            // other route 503), until a retry gets through.
            let front = WaitingFront::default();
            front.set_reason(e.to_string());
            let Some(listener) = listener.take() else {
                unreachable!("the listener is taken once")
            };
            let addr = listener.local_addr()?;
            let http = serve_router(
                listener,
                front.router(),
                &shutdown,
                Duration::from_secs(config.shutdown_grace_seconds),
                http::serve::Limits::from_config(&config),
            );
            let state = wait_for_store(config, clock, &front, e, shutdown.subscribe()).await;
            match state {
                Some(state) => (state, Some((front, addr, http))),
                None => {
                    let _ = shutdown.send(true);
                    let _ = http.await;
                    return Err(StartError::Config(
                        "stopped before the store could be reached".into(),
                    ));
                }
            }
        }
        Err(e) => return Err(e),
    };
    state.shutdown = shutdown.clone();
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
    warn_of_legacy_logins(&state).await;
    state.reactor.catch_up().await?;
    state.log_head.refresh().await?;
    let consumers_stop = watch::channel(false).0;
    let rx = consumers_stop.subscribe();
    let pace = Duration::from_millis(state.config.consumer_pace_ms);
    let consumers = vec![
        state.read_models.spawn(PROJECTION_POLL, pace, rx.clone()),
        state.reactor.spawn(PROJECTION_POLL, pace, rx.clone()),
        state.deliverer.spawn(PROJECTION_POLL, rx.clone()),
        tessera_store::worker::spawn(
            Arc::clone(&state.messages),
            "code messages",
            PROJECTION_POLL,
            rx.clone(),
            delivery::queue::MessageQueue::waker,
            |q| async move { q.drain().await },
        ),
        state.sealer.spawn(PROJECTION_POLL, pace, rx.clone()),
        state.log_head.spawn(PROJECTION_POLL, pace, rx.clone()),
        Arc::clone(&state.tokens).spawn(rx),
    ];
    let router = app(state.clone());
    let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
    let (addr, http) = match (waiting, listener) {
        (Some((front, addr, http)), _) => {
            front.ready(router);
            (addr, http)
        }
        (None, Some(listener)) => {
            let addr = listener.local_addr()?;
            let limits = http::serve::Limits::from_config(&state.config);
            (
                addr,
                serve_router(listener, router, &shutdown, grace, limits),
            )
        }
        (None, None) => unreachable!("the listener is taken only while waiting"),
    };
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

/// Names (by id) the users registered before the login rules whose logins the rules no
/// longer accept as they are: they keep logging in with the login as registered, but a
/// variant finds only the oldest user of a key (see `docs/architecture.md`, "Logins").
async fn warn_of_legacy_logins(state: &AppState) {
    match state.queries.legacy_login_conflicts().await {
        Ok(users) => {
            for (user_id, _, key) in users {
                let reason = match key {
                    None => {
                        "the login rules refuse its login (only the login as registered finds it)"
                    }
                    Some(_) => {
                        "its login enforces to an older user's login (only the login as registered finds it)"
                    }
                };
                tracing::warn!(user_id, "user registered before the login rules: {reason}");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not check logins registered before the login rules")
        }
    }
}
