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

/// Creates users over `http` until `stop`, recording each acknowledged user id in `acked`.
async fn write_load(
    http: reqwest::Client,
    base: String,
    tag: &'static str,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        i += 1;
        if let Ok(v) = create_user(&http, &base, &format!("{tag}{i}")).await
            && let Some(id) = v["data"]["createUserV2"]["user"]["id"].as_str()
        {
            acked.lock().unwrap().push(id.to_string());
        }
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

tessera_tests::both_stores!(
    a_backup_under_load_restores_with_every_acknowledged_event,
    |store| async move {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let s = tessera_tests::TestServer::start(store).await;
        let backup = std::env::temp_dir().join(format!("backup_{}.db", uuid::Uuid::new_v4()));
        if store == Store::Postgres {
            let error = tessera_api::cli::backup(&s.config, &backup)
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("pg_dump"), "{error}");
            assert!(!backup.exists());
            return;
        }
        let live = s.config.sqlite_path().unwrap();
        assert_eq!(mode(&live), 0o600);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tags = ["a", "b"];
        let writers = tags.len();
        let load: Vec<_> = tags
            .into_iter()
            .map(|tag| {
                tokio::spawn(write_load(
                    s.http.clone(),
                    s.base.clone(),
                    tag,
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        // Some writes first, then the backup while the load goes on.
        while acked.lock().unwrap().len() < 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before: Vec<String> = acked.lock().unwrap().clone();
        let made = tessera_api::cli::backup(&s.config, &backup)
            .await
            .expect("backup of a live store");
        let during = acked.lock().unwrap().len();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in load {
            task.await.unwrap();
        }
        assert!(made.bytes > 0);
        assert_eq!(mode(&backup), 0o600);
        assert!(made.key_file.is_some(), "names the key file to keep apart");
        // A second backup to the same file is refused, not overwritten.
        assert!(tessera_api::cli::backup(&s.config, &backup).await.is_err());

        // Restore into a new directory, with the key file put back beside it.
        let target = FreshStore::new(Store::Sqlite).await;
        let restored = tessera_api::cli::restore(&target.config, &backup)
            .await
            .expect("restore");
        assert_eq!(mode(&restored), 0o600);
        assert!(
            tessera_api::cli::restore(&target.config, &backup)
                .await
                .unwrap_err()
                .to_string()
                .contains("exists"),
            "a restore never overwrites a store"
        );
        std::fs::copy(
            made.key_file.as_ref().unwrap(),
            tessera_api::keys::key_file_for(&restored),
        )
        .unwrap();
        let mut report = Vec::new();
        let verified = tessera_api::cli::verify_log(&target.config, &mut report)
            .await
            .expect("verify the copy");
        let report = String::from_utf8(report).unwrap();
        assert!(verified.intact(), "{report}");
        assert!(
            report.contains("OK: the log matches its hash chain"),
            "{report}"
        );
        // Every write acknowledged before the backup began is in the copy, and every
        // aggregate's sequence in the copy is 1..N.
        let db = tessera_store::Db::connect(&target.config.database_url, 1)
            .await
            .unwrap();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'User'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        for id in &before {
            assert!(
                ids.contains(id),
                "acknowledged user {id} missing from the backup"
            );
        }
        // Beyond those, at most one write per writer can be in the copy unacknowledged: the
        // one it was waiting on while the backup ran (committed, its answer still on the way).
        assert!(
            ids.len() <= during + writers,
            "{} users, {during} acknowledged",
            ids.len()
        );
        let gaps: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT aggregate_type, aggregate_id, MAX(sequence) AS top, \
             COUNT(*) AS n, MIN(sequence) AS low FROM events GROUP BY aggregate_type, aggregate_id) AS a \
             WHERE top <> n OR low <> 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(gaps, 0);
        // The restored store serves, with the original's key.
        let server = tessera_api::start(target.config.clone())
            .await
            .expect("the restored store starts");
        server.stop().await;
        let _ = std::fs::remove_file(&backup);
    }
);

/// The value of the series `line_start` (name and labels, exactly) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

tessera_tests::both_stores!(metrics_count_a_scripted_flow, |store| async move {
    let s = tessera_tests::TestServer::start(store).await;
    let (_, factor, secret) = s.active_totp("metered").await;
    assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    assert_eq!(
        s.verify(&factor, &s.code(&secret, 0)).await,
        "PASSCODE_REPLAYED"
    );
    for _ in 0..3 {
        assert_eq!(s.verify(&factor, &s.wrong_code(&secret)).await, "REJECTED");
    }
    // The alert threshold (3 failures) raised one alert.
    let settled = s.quiesce().await;
    assert!(!settled.is_empty());
    let answer = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let scrape = answer.text().await.unwrap();
    assert!(scrape.ends_with("# EOF\n"), "{scrape}");
    for (series, want) in [
        (
            "tessera_proofs_total{factor_type=\"TOTP\",result=\"SUCCESS\"}",
            1.0,
        ),
        (
            "tessera_proofs_total{factor_type=\"TOTP\",result=\"PASSCODE_REPLAYED\"}",
            1.0,
        ),
        (
            "tessera_proofs_total{factor_type=\"TOTP\",result=\"REJECTED\"}",
            3.0,
        ),
        (
            "tessera_command_duration_seconds_count{command=\"verifyFactor\"}",
            5.0,
        ),
        (
            "tessera_command_duration_seconds_count{command=\"activateFactor\"}",
            1.0,
        ),
        (
            "tessera_command_duration_seconds_count{command=\"createUser\"}",
            1.0,
        ),
        // FACTOR_ADDED for the activation, and the incident of the three wrong codes.
        ("tessera_alerts_raised_total", 2.0),
        ("tessera_outbox_depth{channel=\"sms\"}", 0.0),
        ("tessera_password_throttles_total", 0.0),
    ] {
        assert_eq!(sample(&scrape, series), Some(want), "{series}:\n{scrape}");
    }
    // Every GraphQL call above answered 200 on /graphql, counted by route and status.
    let graphql = sample(
        &scrape,
        "tessera_http_requests_total{route=\"/graphql\",status=\"200\"}",
    )
    .expect("/graphql requests counted");
    assert!(graphql >= 8.0, "{graphql}");
    // Each log consumer has its lag; the reactor is caught up after quiesce.
    for consumer in ["read_models_v1", "alert_reactor_v1", "log_seal_v1"] {
        for series in [
            "tessera_consumer_lag_events",
            "tessera_consumer_lag_seconds",
        ] {
            let name = format!("{series}{{consumer=\"{consumer}\"}}");
            assert!(sample(&scrape, &name).is_some(), "no {name}:\n{scrape}");
        }
    }
    assert_eq!(
        sample(
            &scrape,
            "tessera_consumer_lag_events{consumer=\"alert_reactor_v1\"}"
        ),
        Some(0.0)
    );
    // Sampled before the scrape's own queries: what other work holds, maybe nothing.
    let pool = ["in_use", "idle"].map(|state| {
        sample(
            &scrape,
            &format!("tessera_db_pool_connections{{state=\"{state}\"}}"),
        )
        .expect("pool gauge")
    });
    assert!(
        pool[0] + pool[1] >= 1.0,
        "the pool has connections: {pool:?}"
    );
    // A second scrape sees this one counted.
    let again = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &again,
            "tessera_http_requests_total{route=\"/metrics\",status=\"200\"}"
        ),
        Some(1.0)
    );
});
