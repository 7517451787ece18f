//! Factor snapshots: a load through the snapshot equals a full replay, across many snapshot
//! boundaries, including commits that straddle one (a `FailedAttempt` and the `LockedOut` it
//! caused), which the stock cqrs-es 0.5.0 snapshot commit gets wrong; an unreadable snapshot
//! is replaced, never duplicated. Also: an event stored at an older version still loads.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_domain::{
    factor::{Factor, FactorEvent},
    versioning,
};
use tessera_store::Dialect;
use tessera_tests::{Store, TestServer, both_stores};

/// Snapshot size in these tests: small and odd against the 7-event cycle below, so commits
/// of two events straddle boundaries.
const EVERY: usize = 5;

async fn server(store: Store) -> TestServer {
    TestServer::start_with(store, |c| {
        c.lockout_threshold = 3;
        c.lockout_seconds = 60;
        c.factor_snapshot_every = EVERY;
        // These tests look at what loads read from the snapshot rows: no aggregates in memory.
        c.aggregate_cache = 0;
    })
    .await
}

/// One brute-force cycle, 7 events: three wrong codes (the third locks: FailedAttempt and
/// LockedOut in one commit), one attempt while locked, then after the lock the right code
/// (Unlocked and Verified in one commit).
async fn cycle(s: &TestServer, factor: &str, secret: &str) {
    let wrong = s.wrong_code(secret);
    for _ in 0..3 {
        assert_eq!(s.verify(factor, &wrong).await, "REJECTED");
    }
    assert_eq!(s.verify(factor, &s.code(secret, 0)).await, "LOCKED_OUT");
    s.clock.advance(TimeDelta::seconds(61));
    assert_eq!(s.verify(factor, &s.code(secret, 0)).await, "SUCCESS");
    s.clock.advance(TimeDelta::seconds(30));
}

/// `(last_sequence, payload)` of every snapshot row of `id`.
async fn snapshot_rows(s: &TestServer, id: &str) -> Vec<(i64, String)> {
    let db = &s.server().state.db;
    sqlx::query_as(&format!(
        "SELECT last_sequence, {} FROM snapshots WHERE aggregate_id = $1 ORDER BY last_sequence",
        db.dialect.json_text("payload")
    ))
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Overwrites the snapshot row of `id` (to show that loads read it).
async fn set_snapshot_payload(s: &TestServer, id: &str, payload: &str) {
    let db = &s.server().state.db;
    sqlx::query(&format!(
        "UPDATE snapshots SET payload = CAST($1 AS {}) WHERE aggregate_id = $2",
        db.dialect.json_type()
    ))
    .bind(payload)
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn assert_snapshot_equals_replay(s: &TestServer, factor: &str) -> (Factor, usize) {
    let store = &s.server().state.factors;
    let (through_snapshot, seq) = store.load(factor).await.unwrap();
    let (replayed, replay_seq) = store.load_by_replay(factor).await.unwrap();
    assert_eq!(seq, replay_seq);
    assert_eq!(through_snapshot, replayed, "at sequence {seq}");
    (replayed, seq)
}

both_stores!(snapshot_load_equals_full_replay, |store| async move {
    let s = server(store).await;
    let (_, factor, secret) = s.active_totp("alice").await;
    for _ in 0..10 {
        cycle(&s, &factor, &secret).await;
        assert_snapshot_equals_replay(&s, &factor).await;
    }
    let (state, seq) = assert_snapshot_equals_replay(&s, &factor).await;
    assert_eq!(seq, 2 + 7 * 10);
    assert_eq!(state.consecutive_failures, 0);

    // The history really crossed boundaries inside two-event commits.
    let events = s.all_events(json!({ "aggregateId": factor }), 500).await;
    assert_eq!(events.len(), seq);
    let mut commits: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in &events {
        commits
            .entry(e["metadata"]["causation_id"].as_str().unwrap().into())
            .or_default()
            .push(e["sequence"].as_i64().unwrap());
    }
    let every = EVERY as i64;
    let straddling: Vec<&Vec<i64>> = commits
        .values()
        .filter(|seqs| {
            seqs.iter()
                .any(|&q| q % every == 0 && q < *seqs.last().unwrap())
        })
        .collect();
    assert!(straddling.len() >= 4, "{commits:?}");
    let crossed = (seq as i64) / every;
    assert!(crossed >= 14);

    // One snapshot row, at the last boundary crossing, holding the state after every event
    // of that commit.
    let rows = snapshot_rows(&s, &factor).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (last_sequence, payload) = &rows[0];
    assert!(*last_sequence > (seq as i64) - every - 2, "{last_sequence}");
    let mut folded = Factor::default();
    for e in events.iter().take(*last_sequence as usize) {
        folded.apply_stored(e);
    }
    let mut snapshot: Factor = serde_json::from_str(payload).unwrap();
    // The API redacts the sealed secret, so the fold from its nodes has none: compare the rest.
    assert!(snapshot.totp.is_some());
    snapshot.totp = None;
    assert_eq!(snapshot, folded);
    // And loads do read it: a marked snapshot shows through `load`, not through a replay.
    let mut marked: Value = serde_json::from_str(payload).unwrap();
    marked["label"] = json!("from-the-snapshot");
    set_snapshot_payload(&s, &factor, &marked.to_string()).await;
    let store = &s.server().state.factors;
    assert_eq!(
        store.load(&factor).await.unwrap().0.label.as_deref(),
        Some("from-the-snapshot")
    );
    assert_eq!(store.load_by_replay(&factor).await.unwrap().0.label, None);

    // The read model agrees too.
    let read = s
        .ok(
            "query($f: ID!) { factor(id: $f) { status failedAttempts } }",
            json!({ "f": factor }),
        )
        .await;
    assert_eq!(read["factor"]["status"], "ACTIVE");
    assert_eq!(read["factor"]["failedAttempts"], 0);
});

/// Folding helper over API nodes (payloads of these events hold no redacted field that
/// `apply` reads).
trait ApplyStored {
    fn apply_stored(&mut self, node: &Value);
}

impl ApplyStored for Factor {
    fn apply_stored(&mut self, node: &Value) {
        use cqrs_es::Aggregate;
        let mut payload = node["payload"].clone();
        if let Some(totp) = payload.pointer_mut("/Enrolled/totp") {
            // The sealed secret is redacted in the API.
            *totp = Value::Null;
        }
        let event: FactorEvent = versioning::decode(
            node["eventType"].as_str().unwrap(),
            node["eventVersion"].as_str().unwrap(),
            payload,
        )
        .unwrap();
        self.apply(event);
    }
}

both_stores!(
    an_unreadable_snapshot_is_replaced_not_duplicated,
    |store| async move {
        let s = server(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        cycle(&s, &factor, &secret).await;
        assert_eq!(snapshot_rows(&s, &factor).await.len(), 1);
        // The aggregate's shape changed (or the row was damaged): the payload no longer reads as
        // a Factor; and a stale older row sits beside it.
        set_snapshot_payload(&s, &factor, r#"{"state": 42}"#).await;
        let db = &s.server().state.db;
        sqlx::query(&format!(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             VALUES ('Factor', $1, 1, 0, CAST('{{}}' AS {}))",
            db.dialect.json_type()
        ))
        .bind(&factor)
        .execute(&db.pool)
        .await
        .unwrap();
        // Verification still works, from a full replay, which writes a readable snapshot in
        // place of the unreadable rows.
        let (replayed, seq) = assert_snapshot_equals_replay(&s, &factor).await;
        let rows = snapshot_rows(&s, &factor).await;
        assert_eq!(rows.len(), 1, "unreadable rows are gone: {rows:?}");
        assert_eq!(rows[0].0, seq as i64);
        assert_eq!(
            serde_json::from_str::<Factor>(&rows[0].1).unwrap(),
            replayed
        );
        cycle(&s, &factor, &secret).await;
        let rows = snapshot_rows(&s, &factor).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_snapshot_equals_replay(&s, &factor).await;
    }
);

both_stores!(
    an_event_stored_at_an_old_version_still_loads,
    |store| async move {
        let s = server(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        // Sequence 3: a FailedAttempt as version 1.0 wrote it (no `counted`).
        let old = json!({ "FailedAttempt": { "reason": "WRONG_CODE", "consecutive_failures": 1,
                                         "at": "2026-01-01T00:00:00Z" } })
        .to_string();
        let db = &s.server().state.db;
        let mut conn = db.pool.acquire().await.unwrap();
        let old = serde_json::from_str(&old).unwrap();
        tessera_tests::raw::append_one(
            &mut conn,
            db.dialect,
            ("Factor", &factor, 3),
            "FailedAttempt",
            old,
        )
        .await;
        drop(conn);
        // The write side loads it: one failure already counted, so the next wrong code is the
        // second.
        let r = s.verify_raw(&factor, &s.wrong_code(&secret)).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 2);
        // The read side (live and rebuilt) and the point-in-time fold read it the same way.
        // A rebuild replays what the log tailer can see: wait until that is the whole log (a
        // transaction of another test on the PostgreSQL cluster holds the tail back briefly).
        s.settled_events().await;
        let state = &s.server().state;
        state.read_models.rebuild().await.unwrap();
        let read = s
        .ok(
            "query($f: ID!, $t: DateTime) { factor(id: $f) { failedAttempts } asOf: factor(id: $f, asOf: $t) { failedAttempts } }",
            json!({ "f": factor, "t": chrono::Utc::now().to_rfc3339() }),
        )
        .await;
        assert_eq!(read["factor"]["failedAttempts"], 2);
        assert_eq!(read["asOf"]["failedAttempts"], 2);
        // The log shows it as stored.
        let events = s.all_events(json!({ "aggregateId": factor }), 10).await;
        assert_eq!(events[2]["eventVersion"], "1.0");
        assert_eq!(events[3]["eventVersion"], "2.0");
        assert_eq!(events[3]["payload"]["FailedAttempt"]["counted"], true);
    }
);

// Why `Store::execute` does not use cqrs-es 0.5.0's snapshot commit, pinned: even handed the
// aggregate as loaded (the double-apply workaround), a commit of two events across a
// boundary snapshots only the first while recording the second's sequence, so the next load
// never applies the second. If an upgrade fixes this, this test fails: reconsider then.
both_stores!(
    stock_snapshot_commit_loses_the_event_after_a_boundary,
    |store| async move {
        let s = server(store).await;
        // The crates' own repositories need their typed pools: a second pool, for this
        // test only.
        let url = &s.config.database_url;
        match s.server().state.db.dialect {
            Dialect::Postgres => {
                let pg = sqlx::PgPool::connect(url).await.unwrap();
                stock_commit_loses_an_event(postgres_es::PostgresEventRepository::new(pg)).await
            }
            Dialect::Sqlite => {
                let lite = sqlx::SqlitePool::connect(url).await.unwrap();
                stock_commit_loses_an_event(sqlite_es::SqliteEventRepository::new(lite)).await
            }
        }
    }
);

async fn stock_commit_loses_an_event<R: cqrs_es::persist::PersistedEventRepository>(repo: R) {
    use std::collections::HashMap;

    use cqrs_es::{Aggregate, EventStore, persist::PersistedEventStore};
    use tessera_domain::factor::{Activated, FailedAttempt, FailureReason, LockedOut};

    let at = chrono::Utc::now();
    let failed = |n| {
        FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::WrongCode,
            counted: true,
            consecutive_failures: n,
            challenge_id: None,
            at,
        })
    };
    let store = PersistedEventStore::<R, Factor>::new_snapshot_store(repo, 4);
    let id = uuid::Uuid::now_v7().to_string();
    let ctx = store.load_aggregate(&id).await.unwrap();
    let first = vec![
        FactorEvent::Activated(Activated {
            step: Some(1),
            challenge_id: None,
            at,
        }),
        failed(1),
        failed(2),
    ];
    store.commit(first, ctx, HashMap::new()).await.unwrap();
    // Sequence 4 (a boundary) and 5, in one commit.
    let ctx = store.load_aggregate(&id).await.unwrap();
    let locked = FactorEvent::LockedOut(LockedOut {
        until: at + TimeDelta::minutes(15),
        consecutive_failures: 3,
        at,
    });
    store
        .commit(vec![failed(3), locked], ctx, HashMap::new())
        .await
        .unwrap();
    let loaded = store.load_aggregate(&id).await.unwrap();
    assert_eq!(loaded.current_sequence, 5);
    let mut replayed = Factor::default();
    for e in store.load_events(&id).await.unwrap() {
        replayed.apply(e.payload);
    }
    assert!(replayed.locked_until.is_some(), "the log has the lockout");
    assert_eq!(
        loaded.aggregate.locked_until, None,
        "the stock snapshot load has lost it"
    );
}

/// Appends `n` `FailedAttempt(REPLAYED)` events to a factor's stream behind the store's back,
/// as an import (or a history written before snapshots were on) would.
async fn append_raw_history(s: &TestServer, factor: &str, after: usize, n: usize) {
    let payload = json!({ "FailedAttempt": { "reason": "REPLAYED", "consecutive_failures": 0,
                                             "at": "2026-01-01T00:00:00Z" } })
    .to_string();
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let db = &s.server().state.db;
    let mut conn = db.pool.acquire().await.unwrap();
    for sequence in after + 1..=after + n {
        tessera_tests::raw::append_one(
            &mut conn,
            db.dialect,
            ("Factor", factor, sequence as i64),
            "FailedAttempt",
            payload.clone(),
        )
        .await;
    }
}

both_stores!(
    a_history_without_a_snapshot_gets_one_on_its_next_load,
    |store| async move {
        let s = server(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        // Enrolled, Activated, then 4 * EVERY + 2 events no commit of the store wrote: no
        // commit crossed a boundary, so only a load can see the snapshot is missing.
        append_raw_history(&s, &factor, 2, 4 * EVERY + 2).await;
        assert!(snapshot_rows(&s, &factor).await.is_empty());
        let (replayed, seq) = assert_snapshot_equals_replay(&s, &factor).await;
        assert_eq!(seq, 4 * EVERY + 4);
        let rows = snapshot_rows(&s, &factor).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, seq as i64);
        let mut stored: Factor = serde_json::from_str(&rows[0].1).unwrap();
        assert_eq!(stored, replayed);
        // Written once: the next load reads it and writes nothing.
        stored.label = Some("marked".into());
        let marked = serde_json::to_string(&stored).unwrap();
        set_snapshot_payload(&s, &factor, &marked).await;
        let store = &s.server().state.factors;
        assert_eq!(
            store.load(&factor).await.unwrap().0.label.as_deref(),
            Some("marked")
        );
        assert_eq!(snapshot_rows(&s, &factor).await, vec![(seq as i64, marked)]);
        // And the factor still verifies from there.
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    }
);

both_stores!(
    a_user_counting_failures_is_snapshotted_too,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.lockout_threshold = 1000;
            c.hard_lock_threshold = 1000;
            c.factor_snapshot_every = EVERY;
            // These tests look at what loads read from the snapshot rows: no aggregates in memory.
            c.aggregate_cache = 0;
        })
        .await;
        let (user, factor, secret) = s.active_totp("alice").await;
        let wrong = s.wrong_code(&secret);
        for _ in 0..3 * EVERY + 1 {
            assert_eq!(s.verify(&factor, &wrong).await, "REJECTED");
        }
        let users = &s.server().state.users;
        let (through_snapshot, seq) = users.load(&user).await.unwrap();
        let (replayed, replay_seq) = users.load_by_replay(&user).await.unwrap();
        assert_eq!((&through_snapshot, seq), (&replayed, replay_seq));
        assert_eq!(replayed.consecutive_failures, 3 * EVERY as u32 + 1);
        let rows = snapshot_rows(&s, &user).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(rows[0].0 > (seq - EVERY) as i64, "{} of {seq}", rows[0].0);
        let stored: tessera_domain::user::User = serde_json::from_str(&rows[0].1).unwrap();
        assert_eq!(stored.login, "alice");
        assert!(stored.consecutive_failures > 2 * EVERY as u32);
    }
);
