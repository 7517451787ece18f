//! The read side: rebuild equals live, and no event committed late is skipped.

use serde_json::json;
use tessera_store::{Dialect, log};
use tessera_tests::raw::append_one;
use tessera_tests::{TestServer, both_stores};

both_stores!(rebuild_gives_identical_tables, |store| async move {
    let s = TestServer::start(store).await;
    let (_, factor, secret) = s.active_totp("alice").await;
    assert_eq!(s.verify(&factor, "000001").await, "REJECTED");
    assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    s.create_user("bob").await;
    let bob = s.create_user("carol").await;
    let (f2, _) = s.enroll_totp(&bob).await;
    s.ok(
        "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { id } }",
        json!({ "f": f2 }),
    )
    .await;
    let state = &s.server().state;
    let live = state.queries.dump().await.unwrap();
    assert_eq!(live.len(), 5, "3 users and 2 factors: {live:#?}");
    let applied = state.read_models.rebuild().await.unwrap();
    assert!(applied >= 9, "replayed {applied} events");
    assert_eq!(state.queries.dump().await.unwrap(), live);
});

both_stores!(no_event_committed_late_is_skipped, |store| async move {
    let s = TestServer::start(store).await;
    let state = &s.server().state;
    let db = &state.db;
    if db.dialect == Dialect::Sqlite {
        // SQLite serialises writers: a second writer waits for the first to commit, so
        // positions cannot be committed out of order there. Show that instead.
        let lite = &db.pool;
        let mut open = lite.begin().await.unwrap();
        insert_registered(&mut open, Dialect::Sqlite, "late").await;
        let other = tokio::time::timeout(std::time::Duration::from_millis(300), async {
            // Detached: when the timeout drops this future, the `BEGIN IMMEDIATE` still runs on
            // and succeeds once `open` commits; a pooled connection would then go back to the
            // pool holding the write lock, and the catch-up below would find the file locked.
            // Dropped, the detached connection closes, which rolls its transaction back.
            let mut conn = lite.acquire().await.unwrap().detach();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .map(|_| ())
        })
        .await;
        assert!(
            matches!(other, Err(_) | Ok(Err(_))),
            "a second writer must wait"
        );
        open.commit().await.unwrap();
        state.read_models.catch_up().await.unwrap();
        assert!(state.queries.user(&id("late")).await.unwrap().is_some());
        return;
    }
    let pg = &db.pool;
    // Transaction C writes, then A writes, then C writes again and commits while A stays
    // open: C's second position is above A's. A reader that checkpoints by position alone
    // would move past A's event and never see it.
    let mut c = pg.begin().await.unwrap();
    let p1 = insert_registered(&mut c, Dialect::Postgres, "c1").await;
    let mut a = pg.begin().await.unwrap();
    let pa = insert_registered(&mut a, Dialect::Postgres, "a1").await;
    let p3 = insert_registered(&mut c, Dialect::Postgres, "c2").await;
    c.commit().await.unwrap();
    assert!(p1 < pa && pa < p3, "interleaving happened: {p1} {pa} {p3}");

    // C's transaction ended below A's id: its events are final and applied, and the
    // checkpoint is now past A's position. xmin is cluster-wide, so a transaction of another
    // test (another database) can hold C's events back for a moment: wait for them.
    for _ in 0..200 {
        state.read_models.catch_up().await.unwrap();
        if state.queries.user(&id("c2")).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for login in ["c1", "c2"] {
        assert!(
            state.queries.user(&id(login)).await.unwrap().is_some(),
            "{login} not applied"
        );
    }
    assert!(
        state.queries.user(&id("a1")).await.unwrap().is_none(),
        "a1 is not committed"
    );
    assert!(
        state.read_models.checkpoint().pos > pa,
        "checkpoint passed A's position"
    );

    a.commit().await.unwrap();
    for _ in 0..200 {
        state.read_models.catch_up().await.unwrap();
        if state.queries.user(&id("a1")).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        state.queries.user(&id("a1")).await.unwrap().is_some(),
        "the event committed late was skipped"
    );
});

fn id(login: &str) -> String {
    tessera_domain::ids::UserId::for_login(login).to_string()
}

/// Appends a `Registered` event on `conn` (inside its transaction, as another writer would)
/// and returns its global position.
async fn insert_registered(conn: &mut sqlx::AnyConnection, dialect: Dialect, login: &str) -> i64 {
    let payload = json!({ "Registered": {
        "login": login, "email": null, "phone_number": null, "display_name": null,
        "at": "2026-01-01T00:00:00Z" } });
    append_one(
        conn,
        dialect,
        ("User", &id(login), 1),
        "Registered",
        payload,
    )
    .await;
    let position = match dialect {
        Dialect::Postgres => "global_position",
        Dialect::Sqlite => "global_seq",
    };
    sqlx::query_scalar(&format!(
        "SELECT {position} FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1"
    ))
    .bind(id(login))
    .fetch_one(conn)
    .await
    .unwrap()
}

both_stores!(
    rebuild_equals_live_when_streams_span_many_batches,
    |store| async move {
        let s = TestServer::start(store).await;
        // Real commands first, so synthetic streams do not line up with batch boundaries.
        let (_, factor, secret) = s.active_totp("alice").await;
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        let state = &s.server().state;
        // 12,000 events; each stream's 20 events spread over 1,000 positions, so they fall
        // into several of the live loop's batches (500) and across a rebuild's (5,000).
        let written = tessera_tests::synthetic::insert_users(&state.db, 600, 50).await;
        assert_eq!(written, 12_000);
        // The live loop applies them as they come, in its own batches; once the whole log
        // is readable and the alert reactor has raised what the lockouts call for, one more
        // pass leaves nothing behind.
        let total = s.quiesce().await.len();
        assert!(total > 12_000);
        state.read_models.catch_up().await.unwrap();
        let live = state.queries.dump().await.unwrap();
        let rebuilt = state.read_models.rebuild().await.unwrap();
        assert_eq!(rebuilt, total);
        assert_eq!(state.queries.dump().await.unwrap(), live);
        // And what they hold is right, not only equal: every synthetic factor ended active
        // with no failures after its lockout cycle, and the lock was recorded then lifted.
        let factor_rows: Vec<&String> =
            live.iter().filter(|r| r.starts_with("FactorRow")).collect();
        assert_eq!(factor_rows.len(), 601);
        assert!(
            factor_rows.iter().all(|r| r.contains("status: \"ACTIVE\"")
                && r.contains("failed_attempts: 0")
                && r.contains("locked_until: None")
                && (r.contains("last_seq: 19") || r.contains(&factor))),
            "{:?}",
            &factor_rows[..2]
        );
    }
);

both_stores!(the_tail_peek_is_an_index_probe, |store| async move {
    // Every consumer reads the tail after each local commit (SQLite: a peek; PostgreSQL: the
    // page read its batch starts with); a read that scans the log costs time in proportion to
    // its length when nothing is pending, i.e. nearly always.
    let s = TestServer::start(store).await;
    let state = &s.server().state;
    let pg = &state.db.pool;
    match state.db.dialect {
        Dialect::Postgres => {
            // A log as commands write it: one transaction per event, so the planner sees as
            // many transaction ids as events (with few, it happens to choose the index).
            let (_, factor, _) = s.active_totp("alice").await;
            let payload = json!({ "FailedAttempt": { "reason": "REPLAYED",
                "consecutive_failures": 0, "at": "2026-01-01T00:00:00Z" } });
            let mut conn = pg.acquire().await.unwrap();
            sqlx::raw_sql("SET synchronous_commit = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            for sequence in 3..=5002 {
                append_one(
                    &mut conn,
                    Dialect::Postgres,
                    ("Factor", &factor, sequence),
                    "FailedAttempt",
                    payload.clone(),
                )
                .await;
            }
            sqlx::raw_sql("ANALYZE events")
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            let (tx, pos): (i64, i64) = sqlx::query_as(
                "SELECT tx_id::text::bigint, global_position FROM events \
                 ORDER BY tx_id DESC, global_position DESC LIMIT 1",
            )
            .fetch_one(pg)
            .await
            .unwrap();
            // The plan a prepared statement settles on after its first executions: generic,
            // blind to the cursor's values.
            let mut conn = pg.acquire().await.unwrap();
            for sql in [
                "SET plan_cache_mode = force_generic_plan".to_string(),
                format!("PREPARE peek(bigint, bigint) AS {}", log::PG_PEEK),
                format!(
                    "PREPARE page(bigint, bigint, bigint) AS {}",
                    log::pg_page(log::Visibility::Final)
                ),
            ] {
                sqlx::raw_sql(&sql).execute(&mut *conn).await.unwrap();
            }
            // The peek, and the page read a consumer's tick starts with.
            for execute in [
                format!("EXECUTE peek({tx}, {pos})"),
                format!("EXECUTE page({tx}, {pos}, 500)"),
            ] {
                let plan: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {execute}"))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
                let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
                assert!(
                    plan.iter().any(|l| l.contains("Index"))
                        && !plan.iter().any(|l| l.contains("Seq Scan")),
                    "{execute}: {plan:#?}"
                );
            }
        }
        Dialect::Sqlite => {
            let lite = pg;
            tessera_tests::synthetic::insert_users(&state.db, 600, 50).await;
            sqlx::query("ANALYZE").execute(lite).await.unwrap();
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", log::LITE_PEEK))
                    .bind(1_i64)
                    .fetch_all(lite)
                    .await
                    .unwrap();
            assert!(
                plan.iter()
                    .all(|(_, _, _, detail)| detail.starts_with("SEARCH events USING")),
                "{plan:?}"
            );
        }
    }
});

both_stores!(
    a_mutation_reads_back_its_write_however_long_the_consumers_pace,
    |store| async move {
        // A pace far longer than the read-your-writes wait: only a hurried wake-up can make
        // each mutation's write visible before it answers.
        let s = TestServer::start_with(store, |c| c.consumer_pace_ms = 60_000).await;
        let state = &s.server().state;
        for login in ["pace1", "pace2", "pace3"] {
            let id = s.create_user(login).await;
            let row = state.queries.user(&id).await.unwrap();
            assert_eq!(
                row.map(|r| r.login),
                Some(login.to_string()),
                "{login} is in the read model when createUser answers"
            );
        }
    }
);
