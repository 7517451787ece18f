//! Operating the server: a PostgreSQL that is unreachable at start or goes away while the
//! server runs (through a proxy in front of the shared cluster, which is never restarted
//! here), `/healthz` and `/readyz` meanwhile.

use std::{net::ToSocketAddrs, time::Duration};

use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, Store, fresh::FreshStore, proxy::Proxy};

/// A `/readyz` answer, which must come within a second whatever the store does.
async fn ready(http: &reqwest::Client, base: &str) -> (u16, String) {
    let answer = http
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("/readyz answers within 1 s");
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

async fn create_user(http: &reqwest::Client, base: &str, name: &str) -> reqwest::Result<Value> {
    http.post(format!("{base}/graphql"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({
            "query": "mutation($u: String!) { createUserV2(input: { login: $u }) { user { id } } }",
            "variables": { "u": name },
        }))
        .send()
        .await?
        .json()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_at_start_is_retried_while_health_answers() {
    let fresh = FreshStore::new(Store::Postgres).await;
    let mut url = reqwest::Url::parse(&fresh.config.database_url).unwrap();
    let target = (url.host_str().unwrap(), url.port().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::new(target);
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    let mut config = fresh.config.clone();
    config.database_url = url.to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let starting = tokio::spawn(tessera_api::start(config));
    // Up while the store is not: /healthz 200, /readyz 503 naming host, port and cause.
    loop {
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let (status, reason) = ready(&http, &base).await;
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason.contains(&format!("PostgreSQL at 127.0.0.1:{}", proxy.port())),
        "{reason}"
    );
    assert!(reason.contains("refused"), "{reason}");
    let refused = http
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(!starting.is_finished());

    // The store comes: the retry gets through, by itself.
    proxy.up().await;
    let server = starting
        .await
        .unwrap()
        .expect("started once the store is up");
    assert_eq!(ready(&http, &base).await.0, 200);
    let created = create_user(&http, &base, "before").await.unwrap();
    assert!(
        created["data"]["createUserV2"]["user"]["id"].is_string(),
        "{created}"
    );

    // The store goes away under a running server: /readyz says so within a second, requests
    // get errors, not hangs.
    proxy.down().await;
    let (status, _) = ready(&http, &base).await;
    assert_eq!(status, 503);
    let during = http
        .post(format!("{base}/graphql"))
        .bearer_auth(ADMIN_KEY)
        .timeout(Duration::from_secs(30))
        .json(&json!({"query": "mutation { createUserV2(input: { login: \"during\" }) { user { id } } }"}))
        .send()
        .await
        .expect("an answer, not a hang");
    let during: Value = during.json().await.unwrap_or(Value::Null);
    assert!(during["data"]["createUserV2"].is_null(), "{during}");

    // And comes back: the pool reconnects without a restart.
    proxy.up().await;
    loop {
        if ready(&http, &base).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = Value::Null;
    for _ in 0..20 {
        match create_user(&http, &base, "after").await {
            Ok(v) if v["data"]["createUserV2"]["user"]["id"].is_string() => {
                after = v;
                break;
            }
            // The first query on a connection cut while idle fails once and is dropped.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        after["data"]["createUserV2"]["user"]["id"].is_string(),
        "{after}"
    );
    server.stop().await;
}
