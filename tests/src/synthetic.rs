//! Synthetic event logs for rebuild tests and benchmarks.

use serde_json::json;
use tessera_store::{Conflict, Db, NewEvent, append};

/// The 20 events of synthetic user `u` and their TOTP factor, as the server would have
/// written them: (aggregate type, aggregate id, sequence, event type, version, payload).
fn user_events(
    u: usize,
) -> Vec<(
    &'static str,
    String,
    i64,
    &'static str,
    &'static str,
    String,
)> {
    let user = format!("00000000-0000-4000-8000-{u:012}");
    let factor = format!("00000000-0000-7000-8000-{u:012}");
    let at = "2026-01-01T00:00:00Z";
    let mut out = vec![(
        "User",
        user.clone(),
        1,
        "Registered",
        "1.0",
        json!({ "Registered": { "login": format!("user{u}"), "email": format!("user{u}@example.com"),
                                "phone_number": null, "display_name": format!("User {u}"), "at": at } })
        .to_string(),
    )];
    let mut f = |seq: i64, t: &'static str, v: &'static str, p: serde_json::Value| {
        out.push(("Factor", factor.clone(), seq, t, v, p.to_string()));
    };
    f(
        1,
        "Enrolled",
        "1.0",
        json!({ "Enrolled": { "factor_id": factor, "user_id": user, "factor_type": "TOTP",
            "label": "phone", "totp": { "secret": { "key_id": "0123456789abcdef",
            "nonce": "q83vEjRWeJCrze8S", "ciphertext": "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
            "params": { "algorithm": "SHA1", "digits": 6, "period": 30 } },
            "expires_at": "2026-01-01T00:15:00Z", "at": at } }),
    );
    f(
        2,
        "Activated",
        "1.0",
        json!({ "Activated": { "step": 100, "at": at } }),
    );
    let mut seq = 3;
    let mut step = 101;
    // 17 more: three rounds of (wrong, wrong, verified), then a lockout cycle, then successes.
    for _ in 0..3 {
        for n in 1..=2 {
            f(
                seq,
                "FailedAttempt",
                "2.0",
                json!({ "FailedAttempt": { "reason": "WRONG_CODE",
                "counted": true, "consecutive_failures": n, "at": at } }),
            );
            seq += 1;
        }
        f(
            seq,
            "Verified",
            "1.0",
            json!({ "Verified": { "step": step, "at": at } }),
        );
        seq += 1;
        step += 1;
    }
    for n in 1..=5 {
        f(
            seq,
            "FailedAttempt",
            "2.0",
            json!({ "FailedAttempt": { "reason": "WRONG_CODE",
            "counted": true, "consecutive_failures": n, "at": at } }),
        );
        seq += 1;
    }
    f(
        seq,
        "LockedOut",
        "1.0",
        json!({ "LockedOut": { "until": "2026-01-01T00:15:00Z",
        "consecutive_failures": 5, "at": at } }),
    );
    seq += 1;
    f(
        seq,
        "Unlocked",
        "1.0",
        json!({ "Unlocked": { "automatic": true, "at": at } }),
    );
    seq += 1;
    while seq <= 19 {
        f(
            seq,
            "Verified",
            "1.0",
            json!({ "Verified": { "step": step, "at": at } }),
        );
        seq += 1;
        step += 1;
    }
    out
}

/// Writes the events of users `0..users` straight into the table, 1,000 per transaction;
/// the streams of each `interleave` consecutive users are interleaved event by event (1:
/// one user after another), so a stream can span many batches of a reader. Returns how
/// many events.
pub async fn insert_users(db: &Db, users: usize, interleave: usize) -> usize {
    let meta = json!({ "actor": "api-key:0123456789abcdef", "request_id": "4f1c0d7e-8d2a-4f7e-9a51-0c2b7e1d9f00",
                       "correlation_id": "4f1c0d7e-8d2a-4f7e-9a51-0c2b7e1d9f00",
                       "causation_id": "cmd-0192f0a4-7b7e-7c3d-9a51-0c2b7e1d9f00", "command": "Verify",
                       "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)" })
    .to_string();
    let mut written = 0;
    let mut batch = Vec::with_capacity(1000);
    let flush = async |batch: &mut Vec<(
        &'static str,
        String,
        i64,
        &'static str,
        &'static str,
        String,
    )>| {
        let rows: Vec<NewEvent<'_>> = batch
            .iter()
            .map(|(t, id, seq, et, v, p)| NewEvent {
                aggregate_type: t,
                aggregate_id: id,
                sequence: *seq,
                event_type: et,
                event_version: v,
                payload: p.clone(),
                metadata: meta.clone(),
            })
            .collect();
        append(&db.pool, db.dialect, &rows, Conflict::Fail)
            .await
            .expect("append synthetic events");
        batch.clear();
    };
    let all: Vec<usize> = (0..users).collect();
    let mut ordered = Vec::with_capacity(users * 20);
    for group in all.chunks(interleave.max(1)) {
        let mut streams: Vec<_> = group.iter().map(|&u| user_events(u).into_iter()).collect();
        loop {
            let before = ordered.len();
            for stream in &mut streams {
                ordered.extend(stream.next());
            }
            if ordered.len() == before {
                break;
            }
        }
    }
    {
        for e in ordered {
            batch.push(e);
            written += 1;
            if batch.len() == 1000 {
                flush(&mut batch).await;
            }
        }
    }
    flush(&mut batch).await;
    written
}
