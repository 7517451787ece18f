//! Harness for end-to-end tests: the real server on `127.0.0.1:0` over a fresh PostgreSQL
//! database or SQLite file, GraphQL over real HTTP, TOTP codes from the returned secret.
//!
//! Every test runs on both stores through [`both_stores!`]. By concern:
//! [`passkeys`] (a soft WebAuthn authenticator), [`server`] (lifecycle: fresh databases, restarts, a second node), [`client`] (GraphQL over
//! HTTP, audit pages, waiting), [`actions`] (named domain actions and TOTP codes), [`oracle`]
//! (reading the store directly), [`phones`] with [`smtp_sink`] and [`webhook_sink`] (real SMTP
//! and HTTP receivers on loopback, where codes are sent), [`ws`] (graphql-transport-ws),
//! [`browser`] (a real headless Chromium over WebDriver), [`synthetic`] and [`raw`] (event
//! logs written as another process would), [`history`] (recorded histories of concurrent
//! operations and the checkers run on them afterwards).

pub mod actions;
pub mod browser;
pub mod client;
pub mod fresh;
pub mod history;
pub mod log_capture;
pub mod okta;
pub mod oracle;
pub mod passkeys;
pub mod phones;
pub mod proxy;
pub mod raw;
pub mod server;
pub mod smtp_sink;
pub mod synthetic;
pub mod webhook_sink;
pub mod ws;

pub use actions::code_at;
pub use client::{error_code, error_reason, identity, jwt_claims};
pub use okta::OktaAnswer;
pub use phones::{DELIVERY_WAIT, Phones, contains_code, extract_code};
pub use server::{ADMIN_KEY, Store, TestServer};
pub use ws::{WsClient, WsMessage};

/// Runs each test body once per store: `both_stores!(name, |store| async move { .. })`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)($crate::Store::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                ($body)($crate::Store::Sqlite).await
            }
        }
    };
}
