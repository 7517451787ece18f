//! The bounded argon2 pool: at most `TESSERA_HASH_CONCURRENCY` password and recovery-code
//! jobs at once, at most `TESSERA_HASH_QUEUE` waiting, and beyond that `RATE_LIMITED`
//! (`HASHING_BUSY`) with nothing written. How much latency other traffic keeps during a flood
//! is measured by `tessera-bench --login-flood`, not here.

use futures::StreamExt;
use serde_json::Value;
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery staple";

/// One series of a `/metrics` scrape.
fn series(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {scrape}"))
}

async fn scrape(s: &TestServer) -> String {
    let answer = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.text().await.unwrap()
}

async fn unknown_logins_counted(s: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT CAST(COALESCE(SUM(failures), 0) AS BIGINT) FROM login_throttle")
        .fetch_one(&s.server().state.db.pool)
        .await
        .unwrap()
}

// One job at a time and one waiting: of forty logins at once (three known users, the rest
// unknown) some find the queue full. Those are refused with a retryAfter and leave nothing
// behind; every other one was checked and its failure counted, as before.
both_stores!(
    a_login_flood_beyond_the_queue_is_refused_and_writes_nothing,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.hash_concurrency = 1;
            c.hash_queue = 1;
        })
        .await;
        let known = ["ann", "ben", "cat"];
        let mut ids = Vec::new();
        for login in known {
            ids.push(s.create_full_user(login, PASSWORD).await);
        }
        let before: Vec<usize> = futures::future::join_all(
            ids.iter()
                .map(|id| async { s.event_types("User", id).await.len() }),
        )
        .await;
        let logins: Vec<String> = (0..40)
            .map(|i| match i % 8 {
                0..3 => known[i % 8].to_string(),
                _ => format!("nobody-{i}"),
            })
            .collect();
        let answers: Vec<(String, Value)> = futures::stream::iter(logins.clone())
            .map(|login| {
                let s = &s;
                async move {
                    let r = s.login(&login, "a wrong guess").await;
                    (login, r)
                }
            })
            .buffer_unordered(40)
            .collect()
            .await;
        let refused: Vec<&(String, Value)> = answers
            .iter()
            .filter(|(_, r)| error_reason(r) == "HASHING_BUSY")
            .collect();
        assert!(!refused.is_empty(), "nothing was refused: {answers:?}");
        for (login, r) in &refused {
            assert_eq!(error_code(r), "RATE_LIMITED", "{login}: {r}");
            let retry = r["errors"][0]["extensions"]["retryAfter"].as_i64();
            assert!(retry.is_some_and(|s| s >= 1), "{login}: {r}");
            assert_eq!(r["data"], Value::Null, "{r}");
        }
        let checked = |login: &str| {
            answers
                .iter()
                .filter(|(l, r)| l == login && error_reason(r) == "INVALID_CREDENTIALS")
                .count()
        };
        for (_, r) in &answers {
            assert!(
                ["HASHING_BUSY", "INVALID_CREDENTIALS"].contains(&error_reason(r)),
                "{r}"
            );
        }
        // Every checked guess of a known user is one LoginFailed; a refused one wrote nothing.
        for ((login, id), before) in known.iter().zip(&ids).zip(before) {
            let types = s.event_types("User", id).await;
            let failed = types.iter().filter(|t| *t == "LoginFailed").count();
            assert_eq!(failed, checked(login), "{login}: {types:?}");
            assert_eq!(types.len(), before + checked(login), "{login}: {types:?}");
        }
        // Unknown logins are counted in the throttle table, the refused ones not at all.
        let unknown_checked: usize = logins
            .iter()
            .filter(|l| l.starts_with("nobody-"))
            .map(|l| checked(l))
            .sum();
        assert_eq!(
            unknown_logins_counted(&s).await,
            i64::try_from(unknown_checked).unwrap()
        );
        let scrape = scrape(&s).await;
        assert_eq!(
            series(&scrape, "tessera_hash_jobs_refused_total"),
            refused.len() as f64,
            "{scrape}"
        );
        assert_eq!(series(&scrape, "tessera_hash_jobs_in_flight_max"), 1.0);
        // The flood is over: the next guess is checked.
        let r = s.login("ann", PASSWORD).await;
        assert!(r["data"]["login"]["accessToken"].is_string(), "{r}");
    }
);

// Two slots and room for everyone: the pool is seen full, with jobs waiting, by a scrape and
// a GraphQL query answered meanwhile, and never runs more than two.
both_stores!(
    the_pool_never_runs_more_than_its_slots_and_other_requests_are_answered,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.hash_concurrency = 2;
            c.hash_queue = 1000;
        })
        .await;
        let done = std::sync::atomic::AtomicBool::new(false);
        let flood = async {
            let answers = futures::stream::iter(0..60)
                .map(|i| {
                    let s = &s;
                    async move {
                        error_reason(&s.login(&format!("flood-{i}"), "guess").await).to_string()
                    }
                })
                .buffer_unordered(60)
                .collect::<Vec<String>>()
                .await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            answers
        };
        let watch = async {
            loop {
                let scrape = scrape(&s).await;
                let in_flight = series(&scrape, "tessera_hash_jobs_in_flight");
                assert!(in_flight <= 2.0, "{scrape}");
                if in_flight == 2.0 && series(&scrape, "tessera_hash_jobs_waiting") > 0.0 {
                    break;
                }
                assert!(
                    !done.load(std::sync::atomic::Ordering::SeqCst),
                    "the flood ended before the pool was seen full: {scrape}"
                );
                tokio::task::yield_now().await;
            }
            // Answered while the pool was saturated a moment ago (no wait on argon2 here).
            let r = s.gql("{ mfaPolicy { mode } }", Value::Null).await;
            assert!(r["data"]["mfaPolicy"]["mode"].is_string(), "{r}");
        };
        let (answers, ()) = tokio::join!(flood, watch);
        assert_eq!(answers, vec!["INVALID_CREDENTIALS"; 60]);
        let scrape = scrape(&s).await;
        assert_eq!(
            series(&scrape, "tessera_hash_jobs_in_flight_max"),
            2.0,
            "{scrape}"
        );
        assert_eq!(series(&scrape, "tessera_hash_jobs_in_flight"), 0.0);
        assert_eq!(series(&scrape, "tessera_hash_jobs_refused_total"), 0.0);
    }
);
